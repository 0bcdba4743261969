// Package flowtree finds the owner of an IPv4 packet: it maps a flow
// (protocol, local and remote address, local and remote port) to a Handle,
// the caller's index of the endpoint, listener or NAT mapping side that owns
// it. Each shard owns one Tree and is its only writer; lookups come from the
// shard's fast path and, without locks, from any other goroutine (the status
// and NAT views).
//
// Entries enter through Insert (exact flows), InsertListener, Replace and
// Delete, called by the owning shard; answers leave through Lookup (per
// packet, fed straight from header bytes), Get, and the ordered walks
// Ascend, AscendProto, AscendPrefix and AscendRemotePrefix.
//
// # Matching
//
// Lookup tries, most specific first: the exact 5-tuple; then the listener on
// (protocol, local address, local port); then the listener on (protocol, any
// address, local port). A NAT mapping is two exact entries, one per side,
// and counts twice against the capacity.
//
// # Structure
//
// All entries live in fixed arrays (an arena) allocated by New and linked by
// uint32 indices, so the tree holds no Go pointers and the garbage collector
// never scans it. Each entry is one leaf; two indexes share the leaves: a
// crit-bit tree, which keeps them in key order for walks and prefix
// queries, and a hash table, which answers Lookup and Get in one or two
// memory accesses instead of a tree descent (about 20 levels at 1M flows).
//
//	nodes   []inode   8 B   child[0], child[1]: links to nodes or leaves
//	leaves  []leaf   24 B   key (4 words), handle, next leaf in hash chain
//	buckets []uint32  4 B   first leaf of each hash chain
//
//	link = arena index<<8 | leaf flag<<7 | bit tested by the node (0-111)
//
//	tree:  root ─► n5 bit 3 ─┬─0─► n2 bit 63 ─┬─0─► L1  6 198.18.0.1:80<-*
//	                         │                └─1─► L3  6 198.18.0.1:80<-198.18.9.9:4000
//	                         └─1─► L2  17 198.18.0.1:53<-198.18.7.7:1234
//
//	hash:  buckets[h(L1)] ─► L1 ─next─► L2 ─next─► 0
//	       buckets[h(L3)] ─► L3 ─next─► 0
//
// A key is a 128-bit number laid out as protocol, local address, local
// port, kind (listener 0, exact flow 1), remote address, remote port, so key
// order is the order of the fields and every prefix query (one protocol, one
// local address, one /24) is one subtree. A node sends keys whose tested bit
// is 0 left and the others right; tested bits grow along every path. The
// hash is seeded per tree, so an outsider who does not know the seed cannot
// pick ports and addresses that pile up in one chain.
//
// # Concurrency: one writer, lock-free readers, validated reuse
//
// Every change a reader can see is one atomic store of one uint32. Insert
// fills a new leaf and a new branch node off to the side, then links them
// into the tree with one store and onto the head of the hash chain with
// another. Delete unlinks with one store in the tree (the link to the
// leaf's parent now points to the leaf's sibling) and one in the chain (the
// predecessor skips the leaf). A leaf's key never changes while it is
// linked, and its handle is one atomic word, so a reader never sees a torn
// entry. Crit-bit updates touch a single link, so copy-on-write of paths is
// not needed.
//
// What is left is reuse: a reader may still stand on a node or leaf that
// was just unlinked. Epoch-based reclamation would have every lookup
// announce itself, either in a shared counter, which bounces one cache line
// between the cores and kills reader scaling, or in a per-reader slot, which
// needs a registration that a per-packet lookup from any goroutine does not
// have. Instead reuse is validated, as in a sequence lock: unlinked nodes
// and leaves wait in limbo; when limbo is full (slack = 1/8 of the capacity,
// at least 256, at most 65536) the writer increments a generation counter
// and only then puts them on the free list. A reader loads the generation
// before and after its walk and retries if it changed. Readers write
// nothing shared, so they scale with cores; the writer never waits for
// them; and a reader retries only when a recycle (at most one per slack
// deletes) fell inside its walk. A reader that starts after a recycle
// cannot reach what it freed, which was unlinked before; what is unlinked
// later keeps its contents until the next recycle, which the reader's second
// load sees. Arena words are atomics, so reading a recycled slot is a
// race-free read of a value the reader then throws away, and walks are
// bounded so that stale links cannot make them loop. Readers are lock-free,
// not wait-free: a retry means the writer made progress.
//
// Walks collect up to 64 entries per validated pass and call the callback
// between passes, holding nothing, so a callback may even modify the tree
// from the writer's goroutine. An entry present for the whole walk is
// reported exactly once, in key order; one inserted or deleted meanwhile
// may or may not be.
//
// # Cost
//
// Memory is allocated once, in New, for the capacity: 8 bytes per node and
// 24 per leaf for the capacity plus the slack, 4 per hash bucket (the
// capacity rounded up to a power of two), 8 per slack slot of limbo. That is
// 38.5 bytes per entry at a capacity of 1M, 41 at 64K, 46 at 1K (Bytes
// reports it). Inserting into a full tree returns an error wrapping ErrFull
// that says to raise the capacity. Lookups, walks and writes do not
// allocate. bench/results/flowtree.txt has lookup, write, memory, GC and
// scaling measurements against a Go map and a sync.Map.
package flowtree
