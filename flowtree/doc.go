// Package flowtree finds the owner of an IPv4 packet: it maps a flow
// (protocol, local and remote address, local and remote port) to a Handle,
// the caller's index of the endpoint, listener or NAT mapping side that owns
// it. Each shard owns one Tree and is its only writer; lookups come from the
// shard's fast path and, without locks, from any other goroutine (the status
// and NAT views).
//
// Entries enter through Insert (exact flows), InsertListener, InsertSpec
// (any shape), Replace, ReplaceSpec, Delete, DeleteListener and DeleteSpec,
// called by the owning shard; answers leave through Lookup (per packet, fed
// straight from header bytes), Get and GetSpec, the ordered walks Ascend,
// AscendProto, AscendPrefix and AscendRemotePrefix (connections and
// listeners), and Specs (every entry, on the writer's goroutine).
//
// # Shapes and the most-specific rule
//
// An entry is a Spec: each of the five fields (protocol, local address,
// local port, remote address, remote port) is exact or any, and each address
// may also be a prefix. The pattern of a spec (which fields are exact, the
// prefix lengths) is its shape; the entries of one shape live in one lookup
// trie, and Lookup probes the tries of the shapes in use, most specific
// first, and returns the first match (tuple space search, as in Open
// vSwitch, with tries in place of hash tables). Connections (all five
// exact), listeners on one address (protocol, local address, local port)
// and listeners on any address (protocol, local port) are three shapes whose
// tries always exist; other shapes get one of 12 more slots while they have
// entries (ErrTooManyShapes beyond). A lookup probes only shapes that have
// entries, so a tree of connections pays for one probe.
//
// Most specific means, in this order: more exact fields (an address counts
// as exact at /32), then a longer total prefix length of the two addresses.
// So a connection beats everything, a listener on one address beats one on
// any address, and (tcp, 198.18.0.1, 80, remote 203.0.113.0/24) beats the
// listener on (tcp, 198.18.0.1, 80). Two entries of the same shape never
// both match a packet (same masks, different values). Two entries of
// different shapes as specific as each other could, and then nothing says
// which owns the packet: InsertSpec refuses the second with ErrAmbiguous if
// their flows overlap (for example (tcp, 198.18.0.0/24, 80, any) and (tcp,
// any, 80, 203.0.113.0/24), both 2 exact fields and 24 bits). The check
// walks the entries of the shapes of equal rank, which connections and
// listeners never have.
//
// # Structure
//
// All entries live in fixed arrays (arenas) linked by uint32 indices, so the
// tree holds no Go pointers into them and the garbage collector never scans
// them. Each entry is one leaf, linked from two indexes: the lookup trie of
// its shape, which answers Lookup, Get and the writer's searches, and, for
// connections and listeners, a crit-bit tree that keeps them in key order
// for walks and prefix queries.
//
//	leaves  []leaf   24 B   key (trie form, two words), handle
//	nodes   []inode   8 B   crit-bit: child[0], child[1]
//	tiny    []tiny   64 B   trie node with up to 8 children
//	small   []small 192 B   trie node with up to 32 children
//	big     []big  1028 B   trie node with 256 children
//	wide    []uint32  4 B   per slot: the connection trie's multibit root
//
// A lookup trie (trie.go) is a radix tree over the 13 key bytes with
// optimistic path compression, as in the adaptive radix tree (Leis et al.,
// ICDE 2013): a node only records the byte position it branches on, bytes
// all keys below share make no node, and the one key comparison is at the
// leaf. Positions strictly increase along every path, so any lookup visits
// at most 13 nodes whatever the keys: many keys sharing long prefixes cannot
// make it deeper (BenchmarkAdversarial). Bytes are taken most variable first
// (remote port, remote address from its last byte, local port, local
// address, protocol), and masked fields are zero, so the top of each trie
// fans out on what differs between flows. The connection trie also has a
// wide root, a direct-indexed top level on the first 8 to 20 bits (2 to 4
// slots per entry of capacity, 4 MiB at most), allocated by New: most
// lookups go from there to a leaf in two memory accesses, as a hash table's
// would, but without hashing, so without a secret seed to keep; keys that
// share those bits go on down a byte trie, one level deeper at worst.
//
// The crit-bit tree orders keys as 128-bit numbers laid out as protocol,
// local address, local port, kind (listener 0, exact flow 1), remote
// address, remote port, so key order is the order of the fields and every
// prefix query (one protocol, one local address, one /24) is one subtree. A
// node sends keys whose tested bit is 0 left and the others right; tested
// bits grow along every path. The tries are not ordered (their byte order is
// chosen for lookups), so walks stay on the crit-bit tree; specs of other
// shapes are not in it, and Specs lists them.
//
//	crit-bit:  root ─► n5 bit 3 ─┬─0─► n2 bit 63 ─┬─0─► L1  6 198.18.0.1:80<-*
//	                             │                └─1─► L3  6 198.18.0.1:80<-198.18.9.9:4000
//	                             └─1─► L2  17 198.18.0.1:53<-198.18.7.7:1234
//
//	tries:     connections ─► wide root (New(8): 2^8 slots, the remote port's low byte)
//	                              slot 0xa0 ─► L3
//	                              slot 0xd2 ─► L2
//	           listeners   ─► L1
//	           any-address listeners: empty (not probed)
//
// # Concurrency: one writer, lock-free readers, validated reuse
//
// Every change a reader can see is one atomic store of one word. Insert
// fills a new leaf off to the side, then links it into its trie with one
// store and, for a connection or a listener, into the crit-bit tree with
// another. In a trie, a child is appended to a small node by writing its key
// byte and link past the node's published count and then storing the count;
// it is removed by storing 0 in its link (a tombstone, revived if the byte
// comes back, so a byte is never in two slots of a node). A node that grows
// (tiny to small to big), shrinks, splits (a new node above a compressed
// path) or fills up with tombstones is copied and the copy published with
// one store of the parent link (or of the wide-root slot); a node left with
// one child is replaced by it, one store. Crit-bit updates touch a single link each. A leaf's key
// never changes while it is linked, and its handle is one atomic word, so a
// reader never sees a torn entry. The set of shapes a lookup probes is one
// atomic word (4 bits per shape slot).
//
// The trie arena grows by half when a write needs a node and none is free: the writer copies it and publishes the copy with one pointer store;
// a reader still on the old copy sees a frozen image of the trie as it was
// when copied (readers load a trie's root before the arena, so every link
// they follow is inside the copy they hold).
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
// them; and a reader retries only when a recycle fell inside its walk (a
// recycle comes once per slack retired slots: deletes, and trie nodes that
// an insert or delete replaced; reusing a shape slot also bumps the
// generation). A reader that starts after a recycle
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
// New allocates the leaves and the crit-bit tree for the capacity: 32 bytes
// per entry plus 52 per slack slot (leaves, nodes and the limbo lists), a
// starting trie arena (a tiny node per 8 entries, a small one per 128, a big
// one per 2048) and the wide root (8 to 16 bytes per entry of capacity,
// 1 KiB to 4 MiB). The trie arena then grows by half as the keys need
// nodes, so inserts allocate rarely, and never once the tree has reached its
// working size. Bytes reports what the tree holds: with random flows, about
// 68 bytes per entry at 1M, 61 at 64K, 80 at 1K (BenchmarkPairedMemory).
// Inserting into a full tree returns an error wrapping ErrFull that says to
// raise the capacity. Lookups and walks do not allocate.
// bench/results/flowtree.txt has the first version's measurements against a
// Go map and a sync.Map; bench/results/flowtree-part2.txt compares the tries
// with that version's hash index, in paired rounds.
package flowtree
