package cpu

import (
	"errors"
	"fmt"
)

// ErrNotAllowed is matched (with errors.Is) by the error Pin returns for a CPU outside the
// process's affinity mask.
var ErrNotAllowed = errors.New("cpu: CPU not in this process's affinity mask")

// NotAllowedError is the error Pin returns for a CPU that is offline, does not exist, or is
// excluded from the process's affinity mask (taskset, a cgroup cpuset, a container limit).
type NotAllowedError struct {
	CPU     int   // the CPU asked for
	Allowed []int // the CPUs the process may run on
}

func (e *NotAllowedError) Error() string {
	return fmt.Sprintf("cpu: cannot pin to CPU %d: not in this process's affinity mask; allowed CPUs are [%s] "+
		"(pick one of those, or widen the mask with taskset or the cgroup cpuset)", e.CPU, FormatList(e.Allowed))
}

// Is makes errors.Is(err, ErrNotAllowed) true.
func (e *NotAllowedError) Is(target error) bool { return target == ErrNotAllowed }
