package nat_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/netchan/netchan/internal/nschild"
	"github.com/netchan/netchan/nat"
	"github.com/netchan/netchan/runtime/lab/labtest"
)

func init() { nschild.Register("udp-refused", udpRefused) }

// udpRefused (server side): a UDP socket bound to args[0] and connected to args[1] (an
// inside client's external address) sends a datagram and reads; the kernel fails the read
// with ECONNREFUSED when a port unreachable about the datagram comes back. It tries three
// times, 2 s apart, and prints "refused" and how many datagrams it sent.
func udpRefused(args []string) error {
	laddr, err := net.ResolveUDPAddr("udp4", args[0])
	if err != nil {
		return err
	}
	raddr, err := net.ResolveUDPAddr("udp4", args[1])
	if err != nil {
		return err
	}
	c, err := net.DialUDP("udp4", laddr, raddr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 256)
	for try := 1; try <= 3; try++ {
		if _, err := c.Write([]byte("late")); err != nil {
			if errors.Is(err, syscall.ECONNREFUSED) {
				fmt.Println("refused", try)
				return nil
			}
			return err
		}
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		n, err := c.Read(buf)
		switch {
		case errors.Is(err, syscall.ECONNREFUSED):
			fmt.Println("refused", try)
			return nil
		case errors.Is(err, os.ErrDeadlineExceeded):
			continue
		case err != nil:
			return err
		default:
			return fmt.Errorf("the closed client answered %q", buf[:n])
		}
	}
	return errors.New("no port unreachable came back in three tries")
}

// TestLabNATICMPErrorFromInside: an inside client sends to a server and closes its socket;
// the server then sends to the client's external address, which its mapping still holds. The
// client's kernel answers with a port unreachable, which netchan translates out (RFC 5508
// REQ-5): the server's connected socket gets ECONNREFUSED. With the fast path on, the late
// datagram takes the XDP fast path in and the error the shard's path out.
func TestLabNATICMPErrorFromInside(t *testing.T) {
	labtest.RequireRoot(t)
	for _, fast := range []bool{false, true} {
		t.Run(fmt.Sprintf("fast=%v", fast), func(t *testing.T) {
			nl := startNAT(t, 2, nat.Config{}, fast)
			outside := nl.l.Netchan[1].Addr.Addr().String()
			srv := nl.srv.Addr.Addr().String()
			reporter, _ := serve(t, nl.srv.NS, "udp-reporter", "0.0.0.0:9999")
			var seen []string
			out := run(t, nl.cli.NS, "udp-send", "5000", srv+":9999", srv+":9999")
			if err := json.Unmarshal([]byte(out), &seen); err != nil || len(seen) != 2 || seen[0] != outside+":5000" || seen[1] != seen[0] {
				t.Fatalf("udp-send: %q (%v); want the server to see %s:5000 twice", out, err, outside)
			}
			// The client's socket is closed (udp-send exited); the server's port 9999 is taken
			// over by a connected socket.
			reporter.Process.Kill()
			reporter.Wait()
			reasons := []string{"nat-unsupported", "nat-bad-icmp-quote", "nat-bad-icmp-checksum", "nat-filtered", "nat-no-mapping"}
			dropsBefore := map[string]uint64{}
			for _, r := range reasons {
				dropsBefore[r] = dropCount(nl.in, r)
			}
			before := nl.n.Stats()
			out = run(t, nl.srv.NS, "udp-refused", srv+":9999", seen[0])
			time.Sleep(100 * time.Millisecond)
			after := nl.n.Stats()
			t.Logf("server: %s; ICMP errors out %d, translated %d; fast-path packets %d → %d",
				strings.TrimSpace(out), after.ICMPErrorsOut-before.ICMPErrorsOut, after.ICMPErrorsTranslated-before.ICMPErrorsTranslated,
				before.FastTranslated, after.FastTranslated)
			var tries int
			if _, err := fmt.Sscanf(out, "refused %d", &tries); err != nil {
				t.Fatalf("the server's socket was not refused: %q", out)
			}
			// One port unreachable per datagram that got one back; the kernel's ICMP rate
			// limit may have kept earlier ones from being sent at all.
			if n := after.ICMPErrorsOut - before.ICMPErrorsOut; n < 1 || n > uint64(tries) {
				t.Errorf("%d ICMP errors translated out for %d datagrams, the last refused", n, tries)
			}
			if after.ICMPErrorsTranslated-before.ICMPErrorsTranslated != after.ICMPErrorsOut-before.ICMPErrorsOut {
				t.Errorf("ICMP errors translated %d → %d, out %d → %d: nothing else should have been translated",
					before.ICMPErrorsTranslated, after.ICMPErrorsTranslated, before.ICMPErrorsOut, after.ICMPErrorsOut)
			}
			for _, r := range reasons {
				if d := dropCount(nl.in, r) - dropsBefore[r]; d != 0 {
					t.Errorf("%d packets dropped as %s", d, r)
				}
			}
			if fast && after.FastTranslated-before.FastTranslated < uint64(tries) {
				t.Errorf("the fast path translated %d packets during the late datagrams, want their %d", after.FastTranslated-before.FastTranslated, tries)
			}
		})
	}
}
