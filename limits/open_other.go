//go:build !unix

package limits

// openNoBlock: elsewhere FIFOs are not opened by path, so there is nothing
// to avoid.
const openNoBlock = 0
