//go:build !linux

package cpu

import (
	"errors"
	"fmt"
	"runtime"
)

var errUnsupported = fmt.Errorf("cpu: affinity is only implemented on Linux, not %s: %w", runtime.GOOS, errors.ErrUnsupported)

// Allowed is only implemented on Linux.
func Allowed() ([]int, error) { return nil, errUnsupported }

// Pin is only implemented on Linux.
func Pin(cpu int) (unpin func(), err error) { return nil, errUnsupported }

// Current is only implemented on Linux; it returns -1.
func Current() int { return -1 }
