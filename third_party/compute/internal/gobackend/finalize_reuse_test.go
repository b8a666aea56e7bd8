// Copyright 2023-2026 The GoMLX Authors. SPDX-License-Identifier: Apache-2.0

package gobackend_test

import (
	"testing"
	"unsafe"

	"github.com/gomlx/compute/dtypes"
	"github.com/gomlx/compute/internal/gobackend"
	"github.com/gomlx/compute/shapes"
)

// TestFinalizeReusesMemory: the memory of a buffer its holder finalizes is
// handed out again, a second Finalize of the same buffer still fails and
// frees nothing, and a user-fed buffer's memory is never handed out.
func TestFinalizeReusesMemory(t *testing.T) {
	b := backend.(*gobackend.Backend)
	shape := shapes.Make(dtypes.Float32, 1<<16)
	get := func() (*gobackend.Buffer, unsafe.Pointer) {
		buf, err := b.GetBuffer(shape)
		if err != nil {
			t.Fatal(err)
		}
		return buf, unsafe.Pointer(unsafe.SliceData(buf.RawBytes))
	}
	reused := false
	for range 20 { // a sync.Pool may drop what it is given (often, under the race detector)
		buf, mem := get()
		if err := buf.Finalize(); err != nil {
			t.Fatal(err)
		}
		next, nextMem := get()
		reused = reused || nextMem == mem
		if err := buf.Finalize(); err == nil {
			t.Fatal("a second Finalize of a buffer succeeded")
		}
		if other, otherMem := get(); otherMem == nextMem {
			t.Fatal("a stale Finalize gave away the memory of a buffer in use")
		} else {
			b.PutBuffer(other)
		}
		b.PutBuffer(next)
	}
	if !reused {
		t.Error("the memory of finalized buffers was never reused")
	}

	shared, flat, err := b.NewSharedBuffer(0, shape)
	if err != nil {
		t.Fatal(err)
	}
	user := flat.([]float32)
	for i := range user {
		user[i] = 7
	}
	if err := shared.Finalize(); err != nil {
		t.Fatal(err)
	}
	var held []*gobackend.Buffer
	for range 20 {
		buf, _ := get()
		fl := buf.Flat.([]float32)
		for i := range fl {
			fl[i] = 42
		}
		held = append(held, buf)
	}
	for _, buf := range held {
		b.PutBuffer(buf)
	}
	for i, v := range user {
		if v != 7 {
			t.Fatalf("a user-fed buffer's memory was handed out again: element %d is %v", i, v)
		}
	}
}
