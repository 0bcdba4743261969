package main

import (
	"flag"
	"fmt"

	"github.com/netchan/netchan/cmd/netchan/control"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/echo"
	"github.com/netchan/netchan/pipelines/fault"
)

// faultFlag is the --fault flag of run and echo: a fault stage (package fault) in front of
// the pipeline, for tests and labs.
type faultFlag struct {
	text *string
	cfg  fault.Config
	c    *fault.Counters // nil when no fault is asked for
}

func registerFault(fs *flag.FlagSet, what string) *faultFlag {
	return &faultFlag{text: fs.String("fault", "", "inject faults into received packets before "+what+", for tests and labs: "+
		`comma-separated key=value, such as "drop=0.01,dup=0.02,reorder=0.05,corrupt=0.001,seed=7" or "delay=1ms"; keys: `+fault.Keys)}
}

// parse checks the flag's text; call it before anything is set up.
func (f *faultFlag) parse() error {
	cfg, err := fault.Parse(*f.text)
	if err != nil {
		return fmt.Errorf("--fault %q: %w", *f.text, err)
	}
	f.cfg = cfg
	return nil
}

// wrap puts the fault stage in front of spec's stages when faults were asked for.
func (f *faultFlag) wrap(spec pipelines.App) (pipelines.App, error) {
	if !f.cfg.Active() {
		return spec, nil
	}
	f.c = new(fault.Counters)
	spec, err := echo.WithFault(spec, f.cfg, f.c)
	if err != nil {
		return spec, fmt.Errorf("--fault %q: %w", *f.text, err)
	}
	return spec, nil
}

// serve adds the "fault" status section and says what is injected, when faults were asked for.
func (f *faultFlag) serve(ctl *control.Server) {
	if f.c == nil {
		return
	}
	ctl.AddSection("fault", func() any { return faultStatus{Config: f.cfg.String(), Stats: f.c.Snapshot()} })
	fmt.Printf("netchan: injecting faults into received packets: %v\n", f.cfg)
}

// faultStatus is the "fault" section of an instance run with --fault.
type faultStatus struct {
	Config string `json:"config"`
	fault.Stats
}
