// Command hostile writes lorafit's hostile file corpus: small files that
// lie about their sizes or structure the way an attacker or a damaged
// download would, each aimed at one reader. internal/hostile runs the CLI
// on every one of them under a memory cap. Real files made by PyTorch, PIL
// and lorafit's own fixtures are the starting point wherever a valid
// prefix matters, so each file fails exactly where it lies.
//
//	go run ./scripts/hostile -out internal/hostile/testdata
//
// Output is deterministic, so regenerating changes nothing. Files too big
// to commit (a 50 MB adapter_config.json) and those that cannot be
// committed (FIFOs, /dev/zero) are made by the test itself.
package main

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"flag"
	"fmt"
	"hash/crc32"
	"log"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	out := flag.String("out", "internal/hostile/testdata", "directory to write the corpus into (replaced; relative to the working directory)")
	flag.Parse()
	if err := os.RemoveAll(*out); err != nil {
		log.Fatal(err)
	}
	w := &writer{root: *out, repo: repoRoot()}
	checkpoints(w)
	images(w)
	adapters(w)
	idx(w)
	if w.err != nil {
		log.Fatal(w.err)
	}
}

type writer struct {
	root, repo string
	err        error
}

// put writes one corpus file, creating its directory.
func (w *writer) put(name string, b []byte) {
	if w.err != nil {
		return
	}
	p := filepath.Join(w.root, name)
	if w.err = os.MkdirAll(filepath.Dir(p), 0o755); w.err == nil {
		w.err = os.WriteFile(p, b, 0o644)
	}
}

// read loads a fixture of the repository (paths from its root).
func (w *writer) read(path string) []byte {
	b, err := os.ReadFile(filepath.Join(w.repo, path))
	if err != nil {
		log.Fatal(err)
	}
	return b
}

// repoRoot is the directory of go.mod above the working directory, so the
// command runs from the root or through go generate alike.
func repoRoot() string {
	dir, err := os.Getwd()
	if err != nil {
		log.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			log.Fatal("hostile: no go.mod above the working directory")
		}
		dir = parent
	}
}

// --- checkpoints: `lorafit inspect FILE`, `lorafit predict --weights FILE` ---

// entry is one zip member; declared, when set, is the size the directory
// claims instead of len(data).
type entry struct {
	name     string
	data     []byte
	deflate  bool
	declared uint64
}

func zipOf(entries ...entry) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		method := zip.Store
		if e.deflate {
			method = zip.Deflate
		}
		if e.declared != 0 {
			rw, err := zw.CreateRaw(&zip.FileHeader{Name: e.name, Method: zip.Store,
				CompressedSize64: e.declared, UncompressedSize64: e.declared, CRC32: crc32.ChecksumIEEE(e.data)})
			if err != nil {
				log.Fatal(err)
			}
			rw.Write(e.data)
			continue
		}
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: method})
		if err != nil {
			log.Fatal(err)
		}
		fw.Write(e.data)
	}
	if err := zw.Close(); err != nil {
		log.Fatal(err)
	}
	return buf.Bytes()
}

// Pickle opcodes used below (CPython's Lib/pickle.py names).
const (
	opMark, opStop, opPop, opDup, opEmptyList, opEmptyDict, opAppends = '(', '.', '0', '2', ']', '}', 'e'
	opBinPersID, opReduce, opSetItem, opTuple, opNewFalse, opNone     = 'Q', 'R', 's', 't', 0x89, 'N'
	opBinUnicode, opBinInt, opLong1, opProto                          = 'X', 'J', 0x8a, 0x80
)

// pickleOf assembles opcodes: strings become BINUNICODE, ints BININT or
// LONG1, bytes are copied.
func pickleOf(parts ...any) []byte {
	b := []byte{opProto, 2}
	for _, p := range parts {
		switch p := p.(type) {
		case string:
			b = append(b, opBinUnicode)
			b = binary.LittleEndian.AppendUint32(b, uint32(len(p)))
			b = append(b, p...)
		case int64:
			if p == int64(int32(p)) {
				b = binary.LittleEndian.AppendUint32(append(b, opBinInt), uint32(int32(p)))
			} else {
				b = binary.LittleEndian.AppendUint64(append(b, opLong1, 8), uint64(p))
			}
		case []byte:
			b = append(b, p...)
		case byte:
			b = append(b, p)
		default:
			log.Fatalf("pickleOf: %T", p)
		}
	}
	return append(b, opStop)
}

// tensorDict pickles {"w": a 1-D float tensor over storage "0" of numel
// elements}, as torch.save does.
func tensorDict(numel int64) []byte {
	global := func(m, n string) []byte { return []byte("c" + m + "\n" + n + "\n") }
	return pickleOf(byte(opEmptyDict), "w", global("torch._utils", "_rebuild_tensor_v2"),
		byte(opMark), byte(opMark), "storage", global("torch", "FloatStorage"), "0", "cpu", numel, byte(opTuple), byte(opBinPersID),
		int64(0), byte(opMark), numel, byte(opTuple), byte(opMark), int64(1), byte(opTuple), byte(opNewFalse), byte(opEmptyDict), byte(opTuple),
		byte(opReduce), byte(opSetItem))
}

func deflatedPickle(ops []byte) []byte {
	return zipOf(entry{name: "bomb/data.pkl", data: ops, deflate: true}, entry{name: "bomb/version", data: []byte("3\n")})
}

func checkpoints(w *writer) {
	rep := func(n int, ops ...byte) []byte { return bytes.Repeat(ops, n) }
	// Pickle bombs, deflated so the files stay a few KB.
	w.put("checkpoints/dup_bomb.pth", deflatedPickle(pickleOf(byte(opEmptyList), rep(2_000_000, opDup))))
	w.put("checkpoints/dict_per_byte.pth", deflatedPickle(pickleOf(rep(2_000_000, opEmptyDict))))
	w.put("checkpoints/dicts_popped.pth", deflatedPickle(pickleOf(rep(2_000_000, opEmptyDict, opPop))))
	w.put("checkpoints/deep_nesting.pth", deflatedPickle(pickleOf(rep(1_000_000, opMark, opEmptyList))))
	w.put("checkpoints/huge_list.pth", deflatedPickle(pickleOf(byte(opEmptyList), rep(20, append(append([]byte{opMark}, rep(100_000, opNone)...), opAppends)...))))
	w.put("checkpoints/os_system.pth", zipOf(entry{name: "m/data.pkl", data: pickleOf([]byte("cposix\nsystem\n"), "echo pwned", []byte{0x85, opReduce})}))

	// A storage that claims 10 GB (zip64) in a file of a few hundred bytes,
	// and one that claims 1 GB: under the checkpoint limit, over the file.
	w.put("checkpoints/storage_claims_10GB.pth", zipOf(entry{name: "m/data.pkl", data: tensorDict(10 << 30 / 4)},
		entry{name: "m/data/0", data: make([]byte, 16), declared: 10 << 30}))
	w.put("checkpoints/storage_claims_1GB.pth", zipOf(entry{name: "m/data.pkl", data: tensorDict(1 << 30 / 4)},
		entry{name: "m/data/0", data: make([]byte, 16), declared: 1 << 30}))

	// Real torch.save output, truncated.
	tiny := w.read("checkpoint/pth/testdata/tiny_model.pth")
	w.put("checkpoints/truncated_zip.pth", tiny[:len(tiny)/2])
	legacy := w.read("checkpoint/pth/testdata/tiny_model_legacy.pth")
	w.put("checkpoints/truncated_legacy.pth", legacy[:len(legacy)*2/3])
	if zr, err := zip.NewReader(bytes.NewReader(tiny), int64(len(tiny))); err == nil {
		var entries []entry
		for _, f := range zr.File {
			rc, _ := f.Open()
			var b bytes.Buffer
			b.ReadFrom(rc)
			rc.Close()
			data := b.Bytes()
			if strings.HasSuffix(f.Name, "data.pkl") {
				data = data[:len(data)/2]
			}
			entries = append(entries, entry{name: f.Name, data: data})
		}
		w.put("checkpoints/truncated_pickle.pth", zipOf(entries...))
	} else {
		log.Fatal(err)
	}

	// safetensors: lying header lengths and offsets, and a real file cut.
	st := func(n uint64, header string, data []byte) []byte {
		return append(append(binary.LittleEndian.AppendUint64(nil, n), header...), data...)
	}
	w.put("checkpoints/header_length_1e18.safetensors", st(1<<62, "{}", nil))
	w.put("checkpoints/header_past_end.safetensors", st(99_000_000, `{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, nil))
	lying := `{"w":{"dtype":"F32","shape":[1000000000],"data_offsets":[0,4000000000]}}`
	w.put("checkpoints/lying_offsets.safetensors", st(uint64(len(lying)), lying, make([]byte, 16)))
	ref := w.read("checkpoint/safetensors/testdata/reference.safetensors")
	w.put("checkpoints/truncated.safetensors", ref[:len(ref)-7])
}

// --- images: `lorafit predict --weights random IMAGE` ---

func pngHeader(width, height uint32, extra []byte) []byte {
	ihdr := binary.BigEndian.AppendUint32(nil, width)
	ihdr = binary.BigEndian.AppendUint32(ihdr, height)
	ihdr = append(ihdr, 8, 2, 0, 0, 0) // 8-bit RGB
	chunk := append([]byte("IHDR"), ihdr...)
	b := append([]byte("\x89PNG\r\n\x1a\n"), binary.BigEndian.AppendUint32(nil, uint32(len(ihdr)))...)
	b = append(b, chunk...)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(chunk))
	return append(b, extra...)
}

// jpegHeader is SOI, SOF0 for a gray width×height image and an empty scan.
func jpegHeader(width, height uint16) []byte {
	b := []byte{0xff, 0xd8, 0xff, 0xc0, 0, 11, 8}
	b = binary.BigEndian.AppendUint16(b, height)
	b = binary.BigEndian.AppendUint16(b, width)
	return append(b, 1, 1, 0x11, 0, 0xff, 0xda, 0, 8, 1, 1, 0, 0, 63, 0)
}

// idat is an IDAT chunk holding the start of a zlib stream: enough for a
// decoder to allocate the image before it finds the pixels missing.
func idat() []byte {
	data := []byte{0x78, 0x9c, 0x62, 0x60}
	chunk := append([]byte("IDAT"), data...)
	b := binary.BigEndian.AppendUint32(nil, uint32(len(data)))
	b = append(b, chunk...)
	return binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(chunk))
}

func images(w *writer) {
	w.put("images/100000x100000.png", pngHeader(100000, 100000, idat()))
	w.put("images/65535x65535.jpg", jpegHeader(65535, 65535))
	w.put("images/6000x6000_in_49_bytes.png", pngHeader(6000, 6000, idat()))
	w.put("images/2000x2000_in_25_bytes.jpg", jpegHeader(2000, 2000))
	rgb := w.read("limits/testdata/rgb.png")
	w.put("images/truncated.png", rgb[:len(rgb)/2])
	jpg := w.read("limits/testdata/baseline.jpg")
	w.put("images/truncated.jpg", jpg[:len(jpg)/2])
	w.put("images/text.png", []byte("not an image at all\n"))
}

// --- adapters: `lorafit inspect DIR`, `lorafit predict --adapter DIR` ---
// Each directory holds only the hostile file(s); the test lays them over a
// valid adapter that it makes with `lorafit adapter init`. adapters/ holds
// files that cannot be read; adapter_values/ files that parse but carry
// absurd values, which only predict (building the network) can trip on.

func adapters(w *writer) {
	// cfg is the config `lorafit adapter init --case 2` writes, with fields
	// added or overriding its own, so only they are wrong.
	cfg := func(fields string) []byte {
		return []byte(`{"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ".*\\.2\\.conv3", "bias": "none", "modules_to_save": ["fc", "head"], ` + fields + `}` + "\n")
	}
	w.put("adapters/wrong_types/adapter_config.json", []byte(`{"peft_type": "LORA", "r": "eight", "lora_alpha": [16], "target_modules": 3}`+"\n"))
	w.put("adapters/number_out_of_range/adapter_config.json", cfg(`"lora_dropout": 1e999`))
	w.put("adapters/negative_rank/adapter_config.json", cfg(`"rank_pattern": {"conv3": -4}`))
	w.put("adapter_values/rank_1e9/adapter_config.json", cfg(`"rank_pattern": {"conv3": 1000000000}`))
	w.put("adapter_values/alpha_1e308/adapter_config.json", cfg(`"alpha_pattern": {"conv3": 1e308}`))
	w.put("adapters/not_json/adapter_config.json", []byte("r = 8\nlora_alpha = 16\n"))
	info := func(fields string) []byte {
		return []byte(`{"lorafit_version": 1, "head": [512, 256], "image_size": 28, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], ` + fields + `}` + "\n")
	}
	w.put("adapter_values/classes_1e12/lorafit.json", info(`"num_classes": 1000000000000`))
	w.put("adapter_values/head_1e9_wide/lorafit.json", info(`"num_classes": 10, "head": [1000000000]`))
	w.put("adapter_values/image_size_1e6/lorafit.json", info(`"num_classes": 10, "image_size": 1000000`))
	st := func(header string, data []byte) []byte {
		return append(append(binary.LittleEndian.AppendUint64(nil, uint64(len(header))), header...), data...)
	}
	w.put("adapters/lying_weights/adapter_model.safetensors",
		st(`{"base_model.model.layer1.2.conv3.lora_A.weight":{"dtype":"F32","shape":[8,64,1,1000000],"data_offsets":[0,2048000000]}}`, make([]byte, 64)))
}

// --- idx: `lorafit train --data fashion-mnist --data-dir DIR` ---

func idx(w *writer) {
	header := func(dims ...uint32) []byte {
		b := []byte{0, 0, 8, byte(len(dims))}
		for _, d := range dims {
			b = binary.BigEndian.AppendUint32(b, d)
		}
		return b
	}
	gz := func(b []byte) []byte {
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
		zw.Write(b)
		zw.Close()
		return buf.Bytes()
	}
	const images = "train-images-idx3-ubyte.gz"
	w.put("idx/dims_past_limit/"+images, gz(header(0xffffffff, 28, 28)))
	w.put("idx/claims_1GiB/"+images, gz(append(header(1024, 1024, 1024), make([]byte, 4096)...)))
	w.put("idx/gzip_holds_more/"+images, gz(append(header(1, 2, 2), make([]byte, 8<<20)...)))
	w.put("idx/not_gzip/"+images, []byte(fmt.Sprintf("%x", make([]byte, 64))))
}
