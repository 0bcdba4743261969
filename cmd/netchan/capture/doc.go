// Package capture is what `netchan capture` and `netchan trace` are built from: a small filter
// language evaluated on frame bytes without allocation, the tap a running instance installs on
// every shard's pipeline (pipelines.Tap) with a bounded per-shard ring of fixed-size slots
// between the shard and the instance's drain goroutine, the record stream the instance sends
// its client over the control socket, and the pcapng the capture client writes.
//
// The shard never waits for a capture: its tap copies a selected packet into the next free
// slot of its ring or, when the ring is full, counts it as dropped; the drain goroutine (Serve)
// empties the rings into the client's stream. The counts travel in the stream's Stats and end
// in the pcapng file's interface statistics (isb_filteraccept: selected, isb_ifdrop: not kept,
// isb_usrdeliv: written). With no capture running, no tap is installed, and a pipeline pays one
// atomic load per run for the possibility.
//
// A trace is a capture of every stage, in and out, of the packets that match when they meet
// the first stage: each gets an id (a hash of its bytes and its shard) that its records carry,
// a stage's Handoff verdict is followed to the shard that takes it (which sees the same bytes,
// copied), and so are the hand-offs shards make before their pipelines run (pipelines.TapHandoff).
// Packets the XDP programs handle themselves (the NAT's fast path) reach no shard; the stream's
// Stats count them.
//
// This is a layer-6 package (under cmd/): it imports the library, nothing imports it but the
// netchan command.
package capture
