package mlrsearch_test

import (
	"context"
	"fmt"
	"time"

	"github.com/netchan/netchan/bench/mlrsearch"
)

// A search for the NDR and the PDR (the default goals) of a simulated DUT that forwards at
// most 2 million frames per second, on a link whose line rate is 14.88 Mframe/s. A real trial
// would drive a traffic generator for the duration; this one returns at once.
func Example() {
	trial := func(ctx context.Context, load float64, d time.Duration) (mlrsearch.TrialResult, error) {
		offered := uint64(load * d.Seconds())
		forwarded := min(offered, uint64(2e6*d.Seconds()))
		return mlrsearch.TrialResult{Offered: offered, Forwarded: forwarded}, nil
	}
	cfg := mlrsearch.Config{MinLoad: 10e3, MaxLoad: 14.88e6} // Goals: NDR and PDR
	res, err := mlrsearch.Search(context.Background(), cfg, trial)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, g := range res.Goals {
		fmt.Printf("%s (loss ratio %g): %s, lower bound %.0f, upper bound %.0f, conditional throughput %.0f\n",
			g.Goal, g.Goal.LossRatio, g.Status, g.Lower, g.Upper, g.ConditionalThroughput)
	}
	for _, load := range mlrsearch.LatencyLoads(*res.Goal("PDR")) {
		fmt.Printf("measure latency at %.0f\n", load)
	}
	fmt.Println(len(res.Trials) > 0, res.End)
	// Output:
	// NDR (loss ratio 0): regular, lower bound 2000000, upper bound 2010050, conditional throughput 2000000
	// PDR (loss ratio 0.005): regular, lower bound 2010050, upper bound 2015094, conditional throughput 2000000
	// measure latency at 201005
	// measure latency at 1005025
	// measure latency at 1809045
	// true done
}
