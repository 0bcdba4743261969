package netchan_test

import (
	"fmt"
	"log"
	"time"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/pipelines"
	"github.com/netchan/netchan/pipelines/basic"
	"github.com/netchan/netchan/pipelines/claim"
)

// Reflect UDP to port 9999 on eth1 back to its sender on every queue; everything else on eth1
// stays with the kernel.
func Example() {
	claims, err := claim.ParseList([]string{"udp:9999"})
	if err != nil {
		log.Fatal(err)
	}
	app := netchan.App{
		Name:   "reflect-9999",
		Claims: claims,
		NewPipeline: func(shard int) *pipelines.Pipeline {
			return &pipelines.Pipeline{Stages: []pipelines.Stage{basic.Reflect()}}
		},
	}
	in, err := netchan.Start(netchan.Config{Interfaces: []string{"eth1"}}, app)
	if err != nil {
		log.Fatal(err) // errors say what to do: privileges, a missing interface, a busy queue, memlock
	}
	time.Sleep(10 * time.Second)
	for _, s := range in.Snapshot() {
		fmt.Printf("shard %d (queue %d): rx %d tx %d drops %v\n", s.Shard, s.Queue, s.RxPackets, s.TxPackets, s.Drops)
	}
	if err := in.Stop(); err != nil {
		log.Fatal(err)
	}
}
