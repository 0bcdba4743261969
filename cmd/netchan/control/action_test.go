package control

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// TestActionCall registers an action and calls it: the request arrives as JSON, the result
// comes back decoded, an error is the call's error, and an unknown action is named.
func TestActionCall(t *testing.T) {
	dir := t.TempDir()
	s := listen(t, dir, "a")
	type req struct{ Config string }
	s.AddAction("reload", func(ctx context.Context, raw json.RawMessage) (any, error) {
		var r req
		if len(raw) > 0 {
			if err := json.Unmarshal(raw, &r); err != nil {
				return nil, err
			}
		}
		if r.Config == "bad" {
			return nil, errors.New("config: claims[0]: bad")
		}
		return map[string]string{"applied": r.Config}, nil
	})
	ctx := context.Background()
	var res map[string]string
	if err := Call(ctx, dir, "a", "reload", req{Config: "/etc/x.json"}, &res); err != nil || res["applied"] != "/etc/x.json" {
		t.Fatalf("call: %v %v", res, err)
	}
	if err := Call(ctx, dir, "a", "reload", nil, &res); err != nil || res["applied"] != "" {
		t.Fatalf("call without a body: %v %v", res, err)
	}
	if err := Call(ctx, dir, "a", "reload", req{Config: "bad"}, nil); err == nil || !strings.Contains(err.Error(), "claims[0]") {
		t.Fatalf("an action's error: %v", err)
	}
	if err := Call(ctx, dir, "a", "nope", nil, nil); err == nil || !strings.Contains(err.Error(), `no action "nope"`) || !strings.Contains(err.Error(), "reload") {
		t.Fatalf("unknown action: %v", err)
	}
	if err := Call(ctx, dir, "b", "reload", nil, nil); !errors.Is(err, ErrNotRunning) {
		t.Fatalf("no instance: %v", err)
	}
}
