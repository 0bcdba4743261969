package natbench

import (
	"fmt"

	"github.com/netchan/netchan/bench/sysstat"
)

// readCPU reads one CPU's line of /proc/stat.
func readCPU(cpu int) (sysstat.CPUTimes, error) {
	m, err := sysstat.ReadCPUTimes(cpu)
	if err != nil {
		return sysstat.CPUTimes{}, err
	}
	t, ok := m[cpu]
	if !ok {
		return sysstat.CPUTimes{}, fmt.Errorf("/proc/stat has no line for CPU %d", cpu)
	}
	return t, nil
}
