package pipelines

import (
	"github.com/netchan/netchan/pipelines/claim"
	"github.com/netchan/netchan/runtime/xdpprog"
)

// App is what netchan runs on its shards: one pipeline per shard, the packets the XDP program
// claims for it, the function that names the shard owning a flow, and an optional hook that
// runs once the XDP programs are attached. Bundled pipelines and user programs build an App;
// the front door (package netchan) starts it.
type App struct {
	// Name names the app in logs and status ("reflect", "echo", "nat", ...).
	Name string
	// NewPipeline builds shard i's pipeline; each shard gets its own stages.
	NewPipeline func(shard int) *Pipeline
	// Claims select what the XDP program redirects to netchan, in the grammar of package
	// claim; the rest goes to the kernel. Traffic to the interface's own kernel addresses is
	// taken only by a claim that names it (see package claim).
	Claims []claim.Rule
	// Owner names the shard owning a packet's flow; nil means no hand-off.
	Owner OwnerFunc
	// AfterAttach, if set, runs once the XDP programs are attached and the AF_XDP sockets
	// bound, before the shards start (the NAT hands its flows to the XDP fast path here). An
	// error stops the start and undoes it.
	AfterAttach func(Attached) error
	// Close, if set, runs after the shards stopped and the programs were detached.
	Close func() error
	// BeforeUnmap, if set, runs after the shards stopped and before the UMEMs are unmapped:
	// an App that lends frames to other goroutines (netchannels) waits there for them to come
	// back. If it returns an error, something may still read the UMEMs: the sockets are
	// closed but the memory stays mapped (leaked, and logged) rather than unmapped under a
	// reader.
	BeforeUnmap func() error
	// ClaimsLater says the App's claims come after Start (netchannels claim their flows as
	// they open), so an empty Claims is not an error.
	ClaimsLater bool
}

// Attached is what the front door attached for an App, in the App's interface order.
type Attached struct {
	Ifaces   []string
	Programs []*xdpprog.Program
	// Queues are the queue indices the shards own, shard i owning Queues[i].
	Queues []int
}
