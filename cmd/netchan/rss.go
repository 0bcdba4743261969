package main

import (
	"fmt"

	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/runtime/afxdp"
	"github.com/netchan/netchan/runtime/lab/rssemu"
	"github.com/netchan/netchan/runtime/rss"
)

// ownerStatus is the "owner" section: which function owns a flow, and why.
type ownerStatus struct {
	Function string `json:"function"` // "rss" or "software"
	Why      string `json:"why"`
}

// rssOwner resolves --rss once the interfaces are attached (the queues are known then).
type rssOwner struct {
	mode   string
	status ownerStatus
}

func rssResolver(mode string) (*rssOwner, error) {
	switch mode {
	case "auto", "off", "symmetric", "lab", "lab-symmetric":
		return &rssOwner{mode: mode}, nil
	}
	return nil, fmt.Errorf("--rss %q: want auto, off, symmetric, lab or lab-symmetric", mode)
}

// resolve is echo.Echo.RSS: the RSS to own connections by (nil: the software hash).
func (o *rssOwner) resolve(a pipelines.Attached) (*pipelines.RSS, error) {
	iface := a.Ifaces[0]
	switch o.mode {
	case "off":
		o.status = ownerStatus{"software", "the software hash (pipelines.FlowHash): --rss off"}
		return nil, nil
	case "lab", "lab-symmetric":
		n, err := afxdp.QueueCount(iface)
		if err != nil {
			return nil, err
		}
		key := rssemu.DefaultKey[:]
		if o.mode == "lab-symmetric" {
			key = pipelines.SymmetricKey[:]
		}
		r, err := pipelines.NewRSS(key, pipelines.DefaultRETA(n), a.Queues, true, "the lab's RSS emulation on "+iface)
		if err != nil {
			return nil, err
		}
		o.status = ownerStatus{"rss", r.String() + ": --rss " + o.mode + ", the peer's tc program steers as this NIC would (netchan lab up --rss)"}
		return r, nil
	case "symmetric":
		if err := rss.SetSymmetric(iface); err != nil {
			return nil, fmt.Errorf("--rss symmetric: %w", err)
		}
	}
	r, why, err := rss.Detect(iface, a.Queues)
	if err != nil {
		return nil, err
	}
	o.status = ownerStatus{"software", why}
	if r != nil {
		o.status.Function = "rss"
	}
	return r, nil
}
