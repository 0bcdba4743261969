// Package nat will own netchan's sharded NAT44 (mappings in the flow tree, per-shard port
// slices, rewriting with incremental checksums). It is empty so far.
package nat
