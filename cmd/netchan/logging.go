package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/netchan/netchan"
	"github.com/netchan/netchan/cmd/netchan/config"
)

// The few log lines a data-plane command prints (start, claims, the library's fallbacks,
// fast path off, reload results, errors) go to stderr through log/slog, as text or JSON
// (--log-format, "log" in --config), each with the instance's name and the attributes it is
// about (iface, queue, shard, ...). Nothing logs per packet. The lines the tests and scripts
// wait for ("...; ready") stay on stdout, unchanged.

// logLevel is the level in force; a reload may change it.
var logLevel = new(slog.LevelVar)

// parseLevel reads debug, info, warn or error (config.Validate has checked it).
func parseLevel(s string) slog.Level {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return slog.LevelInfo
	}
	return l
}

// newLogger is the logger of lc writing to w, with every record carrying instance and command.
func newLogger(w io.Writer, lc config.Log, instance, command string) *slog.Logger {
	logLevel.Set(parseLevel(lc.Level))
	opts := &slog.HandlerOptions{Level: logLevel}
	var h slog.Handler
	if lc.Format == "json" {
		h = slog.NewJSONHandler(w, opts)
	} else {
		h = slog.NewTextHandler(w, opts)
	}
	return slog.New(h).With("instance", instance, "command", command)
}

// setupLogging makes cfg's logger the default, so that slog's and the log package's
// functions write through it.
func setupLogging(cfg *config.Config, command string) {
	slog.SetDefault(newLogger(os.Stderr, cfg.Log, cfg.Instance, command))
}

// logPrefix splits what the library's Logf lines start with: a component ("netchan: ",
// "afxdp: ", "xdpprog: "), then what the line is about: "IFACE: ", "IFACE queue Q: ",
// "shard N: ", or "... on IFACE".
var (
	logComponent = regexp.MustCompile(`^(netchan|afxdp|xdpprog|shards): `)
	logSubject   = regexp.MustCompile(`^([A-Za-z0-9_.@-]{1,15})(?: queue (\d+))?: `)
	logShard     = regexp.MustCompile(`^shard (\d+): `)
	logOnIface   = regexp.MustCompile(` on ([A-Za-z0-9_.@-]{1,15})\b`)
)

// slogf is the front door's Config.Logf for an instance on ifaces: each line goes to the
// default slog logger with its component, interface, queue and shard as attributes, at
// warning level when it reports something refused or not done.
func slogf(ifaces []string) func(string, ...any) {
	return func(format string, args ...any) {
		msg := strings.TrimSpace(fmt.Sprintf(format, args...))
		var attrs []any
		if m := logComponent.FindStringSubmatch(msg); m != nil {
			if m[1] != "netchan" {
				attrs = append(attrs, "component", m[1])
			}
			msg = msg[len(m[0]):]
		}
		if m := logShard.FindStringSubmatch(msg); m != nil {
			n, _ := strconv.Atoi(m[1])
			attrs = append(attrs, "shard", n)
			msg = msg[len(m[0]):]
		} else if m := logSubject.FindStringSubmatch(msg); m != nil && slices.Contains(ifaces, m[1]) {
			attrs = append(attrs, "iface", m[1])
			if m[2] != "" {
				q, _ := strconv.Atoi(m[2])
				attrs = append(attrs, "queue", q)
			}
			msg = msg[len(m[0]):]
		} else if m := logOnIface.FindStringSubmatch(msg); m != nil && slices.Contains(ifaces, m[1]) {
			attrs = append(attrs, "iface", m[1])
		}
		level := slog.LevelInfo
		for _, w := range []string{"refused", "not pinned", "failed", "error", "falling back", "unavailable"} {
			if strings.Contains(msg, w) {
				level = slog.LevelWarn
				break
			}
		}
		slog.Log(context.Background(), level, msg, attrs...)
	}
}

// logStarted logs an instance's start: what it runs where.
func logStarted(in *netchan.Instance, pipeline string) {
	var modes []string
	for _, m := range in.Modes() {
		modes = append(modes, m.String())
	}
	slog.Info("started", "pipeline", pipeline, "interfaces", in.Interfaces(), "queues", in.Queues(), "xdp", modes, "shards", in.Shards(), "pid", os.Getpid())
}
