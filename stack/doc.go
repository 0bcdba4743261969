// Package stack will own netchan's per-shard, sans-IO TCP/IP stack (Ethernet, ARP, IPv4, ICMP,
// UDP, TCP, routes, sockets). It is empty so far: packets a pipeline hands to the stack are
// dropped and counted as "no-stack" until it lands.
package stack
