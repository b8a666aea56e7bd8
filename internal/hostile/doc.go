// Package hostile holds lorafit's hostile file corpus (testdata/, written
// by scripts/hostile) and a test that runs the lorafit binary on each file
// under an address-space cap and a time limit: every one must fail with a
// one-line error naming the file, never a panic, an out-of-memory crash, a
// hang or partial output.
package hostile

//go:generate go run ../../scripts/hostile -out testdata
