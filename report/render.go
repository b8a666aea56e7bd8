package report

import (
	"encoding/base64"
	"strings"
)

// markdown renders d as GitHub-flavored Markdown; plots are linked by
// relative path, so report.md is read next to its PNGs.
func markdown(d *document) []byte {
	var b strings.Builder
	b.WriteString("# " + mdText(d.Title) + "\n\n")
	if d.Banner != "" {
		b.WriteString("> **" + mdText(d.Banner) + "**\n\n")
	}
	if len(d.Meta) > 0 {
		var parts []string
		for _, f := range d.Meta {
			parts = append(parts, mdText(f.Label)+": "+mdValue(f, false))
		}
		b.WriteString(strings.Join(parts, " · ") + "\n\n")
	}
	for _, s := range d.Sections {
		b.WriteString("## " + mdText(s.Title) + "\n\n")
		if s.Text != "" {
			b.WriteString(mdText(s.Text) + "\n\n")
		}
		if s.Table != nil {
			mdTable(&b, s.Table)
		}
		for _, g := range s.Groups {
			b.WriteString("### " + mdText(g.Title) + "\n\n")
			for _, f := range g.Facts {
				b.WriteString("- **" + mdText(f.Label) + ":** " + mdValue(f, false) + "\n")
			}
			b.WriteString("\n")
		}
		for _, f := range s.Figures {
			b.WriteString("![" + mdText(f.File) + "](" + mdHref(f.File) + ")  \n*" + mdText(f.Caption) + "*\n\n")
		}
		for _, f := range s.Links {
			b.WriteString("- " + mdText(f.Label) + ": " + mdValue(f, false) + "\n")
		}
		if len(s.Links) > 0 {
			b.WriteString("\n")
		}
	}
	return []byte(b.String())
}

func mdTable(b *strings.Builder, t *table) {
	line := func(cells []string) {
		b.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	head := make([]string, len(t.Head))
	align := make([]string, len(t.Head))
	for i, h := range t.Head {
		head[i] = mdText(h)
		align[i] = "---:"
	}
	align[0] = ":---"
	line(head)
	line(align)
	for _, r := range t.Rows {
		cells := []string{"**" + mdText(r.Label) + "**"}
		for _, c := range r.Cells {
			cells = append(cells, mdValue(fact{Value: c, Code: r.Code && c != none}, true))
		}
		line(cells)
	}
	b.WriteString("\n")
}

// mdValue writes a fact's value as text, code or link; inTable escapes
// the pipes that would otherwise end a table cell, even inside code.
func mdValue(f fact, inTable bool) string {
	v := mdText(f.Value)
	if f.Code {
		v = mdCode(f.Value)
		if inTable {
			v = strings.ReplaceAll(v, "|", `\|`)
		}
	}
	if f.Href != "" {
		v = "[" + v + "](" + mdHref(f.Href) + ")"
	}
	return v
}

var mdEscaper = strings.NewReplacer(
	`\`, `\\`, "`", "\\`", `*`, `\*`, `_`, `\_`, `[`, `\[`, `]`, `\]`,
	`<`, `\<`, `>`, `\>`, `|`, `\|`, `~`, `\~`, "\n", " ",
)

// mdText escapes the characters Markdown would read as markup.
func mdText(s string) string { return mdEscaper.Replace(s) }

// mdCode is a code span that holds any text, backticks included.
func mdCode(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	fence := "`"
	for strings.Contains(s, fence) {
		fence += "`"
	}
	if strings.Contains(s, "`") {
		return fence + " " + s + " " + fence
	}
	return fence + s + fence
}

// mdHref is a link target; angle brackets allow spaces in paths.
func mdHref(h string) string {
	if strings.ContainsAny(h, " ()") {
		return "<" + h + ">"
	}
	return h
}

// htmlPage renders d as one self-contained page: CSS inline and plots as
// data: URIs, so the file alone can be mailed or attached to an issue.
func htmlPage(d *document) []byte {
	var b strings.Builder
	b.WriteString("<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n" +
		"<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n")
	b.WriteString("<title>" + esc(d.Title) + "</title>\n<style>" + css + "</style>\n</head>\n<body>\n<main>\n")
	b.WriteString("<h1>" + esc(d.Title) + "</h1>\n")
	if d.Banner != "" {
		b.WriteString("<p class=\"banner\" role=\"alert\">" + esc(d.Banner) + "</p>\n")
	}
	if len(d.Meta) > 0 {
		var parts []string
		for _, f := range d.Meta {
			parts = append(parts, "<span>"+esc(f.Label)+" "+htmlValue(f)+"</span>")
		}
		b.WriteString("<p class=\"meta\">" + strings.Join(parts, " · ") + "</p>\n")
	}
	for _, s := range d.Sections {
		b.WriteString("<section>\n<h2>" + esc(s.Title) + "</h2>\n")
		if s.Text != "" {
			b.WriteString("<p>" + esc(s.Text) + "</p>\n")
		}
		if s.Table != nil {
			htmlTable(&b, s.Table)
		}
		if len(s.Groups) > 0 {
			b.WriteString("<div class=\"groups\">\n")
			for _, g := range s.Groups {
				b.WriteString("<div class=\"group\"><h3>" + esc(g.Title) + "</h3>\n<dl>")
				for _, f := range g.Facts {
					b.WriteString("<dt>" + esc(f.Label) + "</dt><dd>" + htmlValue(f) + "</dd>")
				}
				b.WriteString("</dl></div>\n")
			}
			b.WriteString("</div>\n")
		}
		if len(s.Figures) > 0 {
			b.WriteString("<div class=\"figs\">\n")
			for _, f := range s.Figures {
				class := ""
				if f.Wide {
					class = " class=\"wide\""
				}
				b.WriteString("<figure" + class + "><img alt=\"" + esc(f.File) + "\" src=\"data:image/png;base64,")
				b.WriteString(base64.StdEncoding.EncodeToString(f.PNG))
				b.WriteString("\">\n<figcaption>" + esc(f.Caption) + " <a href=\"" + esc(f.File) + "\">" + esc(f.File) + "</a></figcaption></figure>\n")
			}
			b.WriteString("</div>\n")
		}
		if len(s.Links) > 0 {
			b.WriteString("<ul class=\"files\">\n")
			for _, f := range s.Links {
				b.WriteString("<li>" + esc(f.Label) + ": " + htmlValue(f) + "</li>\n")
			}
			b.WriteString("</ul>\n")
		}
		b.WriteString("</section>\n")
	}
	b.WriteString("</main>\n</body>\n</html>\n")
	return []byte(b.String())
}

func htmlTable(b *strings.Builder, t *table) {
	b.WriteString("<div class=\"scroll\"><table>\n<thead><tr>")
	for _, h := range t.Head {
		b.WriteString("<th scope=\"col\">" + esc(h) + "</th>")
	}
	b.WriteString("</tr></thead>\n<tbody>\n")
	for _, r := range t.Rows {
		b.WriteString("<tr><th scope=\"row\">" + esc(r.Label) + "</th>")
		for _, c := range r.Cells {
			if r.Code && c != none {
				b.WriteString("<td class=\"text\"><code>" + esc(c) + "</code></td>")
			} else {
				b.WriteString("<td>" + esc(c) + "</td>")
			}
		}
		b.WriteString("</tr>\n")
	}
	b.WriteString("</tbody>\n</table></div>\n")
}

func htmlValue(f fact) string {
	v := esc(f.Value)
	if f.Code {
		v = "<code>" + v + "</code>"
	}
	if f.Href != "" {
		v = "<a href=\"" + esc(f.Href) + "\">" + v + "</a>"
	}
	return v
}

// esc escapes text and attribute values; apostrophes stay readable
// because every attribute is double-quoted.
var esc = strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;").Replace

const css = `
body{margin:0;background:#eef0f3;color:#1d2330;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:20px 36px 48px;background:#fff;min-height:100vh;box-sizing:border-box}
h1{font-size:28px;line-height:1.25;margin:8px 0 6px}
h2{font-size:20px;margin:34px 0 12px;padding-bottom:4px;border-bottom:1px solid #dfe3e8}
h3{font-size:15px;margin:0 0 8px}
p{margin:8px 0 12px;max-width:90ch}
a{color:#1f5fb4}
.banner{max-width:none;margin:14px 0;padding:12px 16px;border:2px solid #d97706;border-radius:6px;background:#fff4e0;color:#7a3e00;font-size:16px;font-weight:600}
.meta{color:#5b6475;max-width:none}
code{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;background:#f1f3f6;padding:1px 4px;border-radius:3px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:6px 14px;border-bottom:1px solid #e4e7ec;text-align:right;vertical-align:top;white-space:nowrap}
thead th{background:#f1f3f6;border-bottom:2px solid #cdd3db}
thead th:first-child{text-align:left}
tbody th{text-align:left;font-weight:600;color:#39414f;white-space:normal;min-width:140px}
td.text{text-align:left;white-space:normal;min-width:150px}
tbody tr:hover{background:#f8f9fb}
.groups{display:grid;grid-template-columns:repeat(auto-fit,minmax(420px,1fr));gap:16px}
.group{border:1px solid #e4e7ec;border-radius:6px;padding:12px 14px}
dl{display:grid;grid-template-columns:max-content 1fr;gap:3px 16px;margin:0}
dt{color:#5b6475}
dd{margin:0;overflow-wrap:anywhere}
.figs{display:grid;grid-template-columns:1fr 1fr;gap:20px}
figure{margin:0}
figure.wide{grid-column:1/-1}
img{display:block;width:100%;height:auto;border:1px solid #e4e7ec;border-radius:4px}
figcaption{font-size:13px;color:#5b6475;margin-top:4px}
ul.files{padding-left:20px}
`
