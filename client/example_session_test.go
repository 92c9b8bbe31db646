package client_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/omninode/lockworker/client"
)

// A session keeps many locks with one keep-alive. If this process died,
// the worker would free both within the session's TTL + 1 s; Close frees
// them at once.
func ExampleClient_NewSession() {
	ctx := context.Background()
	c, err := client.New(ctx, client.Config{Requester: "shipping"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	s, err := c.NewSession(ctx, 10*time.Second)
	if err != nil {
		log.Fatal(err)
	}
	var leases []*client.Lease
	for _, name := range []string{"parcels/7", "parcels/8"} {
		l, err := c.Acquire(ctx, name, client.WithSession(s))
		if err != nil {
			log.Fatal(err)
		}
		leases = append(leases, l)
	}
	fmt.Println("holding", len(leases), "locks in one session:", s.ID != "")
	// Work under the locks with s.Context() (or a lease's): it ends when
	// the session is lost (s.Lost() closes) or closed.
	if err := s.Close(ctx); err != nil {
		log.Fatal(err)
	}
	fmt.Println(context.Cause(s.Context()), "and", context.Cause(leases[0].Context()), context.Cause(leases[1].Context()))
	// Output:
	// holding 2 locks in one session: true
	// session closed and lease released lease released
}
