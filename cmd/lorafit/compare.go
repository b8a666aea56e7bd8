package main

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/lorafit/lorafit/report"
)

// runCompare reads each run's results.json and writes the comparison
// report; the accuracy table goes to stdout too.
func runCompare(fs *flag.FlagSet, args []string, out io.Writer) error {
	dir := fs.String("out", "", "directory for compare.md, compare.html, compare.png and comparison.json (required)")
	dirs, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" {
		return usageErrorf("--out is required")
	}
	if len(dirs) < 2 {
		return usageErrorf("want at least two experiment directories, got %d", len(dirs))
	}
	runs := make([]report.Run, len(dirs))
	for i, d := range dirs {
		if runs[i], err = report.ReadRun(d); err != nil {
			return err
		}
	}
	c, err := report.WriteComparison(*dir, runs)
	if err != nil {
		return err
	}
	head, rows := c.AccuracyTable()
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(c.Differences) > 0 {
		fmt.Fprintf(out, "⚠ the runs differ besides their weights (%s): the change is not the backbone's alone\n",
			strings.Join(c.Differences, "; "))
	}
	fmt.Fprintf(out, "\nwrote %s (compare.md, compare.html, compare.png, comparison.json)\n", *dir)
	return nil
}
