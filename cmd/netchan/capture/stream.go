package capture

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/netchan/netchan/pipelines"
)

// The stream an instance sends a capture or trace client is a sequence of records, each a
// type byte, a little-endian uint32 length and that many bytes: first an Info (JSON), then
// Packets (a fixed binary header and the packet's bytes) and Stats (JSON) as they come, and
// last an End (JSON) saying why the stream ended.
const (
	recInfo   = 'I'
	recPacket = 'P'
	recStats  = 'S'
	recEnd    = 'E'
)

const pktHdrLen = 32

// Info opens a stream: what the instance is and what it selects.
type Info struct {
	Instance   string     `json:"instance"`
	Trace      bool       `json:"trace"`
	Interfaces []string   `json:"interfaces"`
	Shards     int        `json:"shards"`
	Queues     []int      `json:"queues,omitempty"`
	Stages     [][]string `json:"stages"` // per shard, the local stack last
	Reasons    []string   `json:"reasons"`
	Filter     string     `json:"filter"`
	Select     string     `json:"select"` // what is kept, in words
	Snap       int        `json:"snap"`
	StartNanos int64      `json:"start_ns"`
}

// Stats are a stream's running totals, per interface: the packets the taps selected, those
// the rings could not keep, and the packets sent to the client.
type Stats struct {
	Matched []uint64 `json:"matched"`
	Dropped []uint64 `json:"dropped"`
	Sent    uint64   `json:"sent"`
	// XDPFast is how many packets the XDP programs handled themselves (the NAT's fast path)
	// since the stream started: no shard, so no tap, saw them.
	XDPFast uint64 `json:"xdp_fast"`
	Final   bool   `json:"final"`
	EndNano int64  `json:"end_ns,omitempty"`
}

// End closes a stream.
type End struct {
	Why   string `json:"why"` // "count", "stopped", "instance stopped", "done"
	Error string `json:"error,omitempty"`
}

// Packet is one packet record as a client reads it.
type Packet struct {
	Header
	Data []byte
}

// Encoder writes a stream.
type Encoder struct {
	w   *bufio.Writer
	out io.Writer
	hdr [5 + pktHdrLen]byte
}

// NewEncoder writes records to w (buffered: call Flush).
func NewEncoder(w io.Writer) *Encoder { return &Encoder{w: bufio.NewWriterSize(w, 64<<10), out: w} }

func (e *Encoder) json(t byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	e.hdr[0] = t
	binary.LittleEndian.PutUint32(e.hdr[1:5], uint32(len(b)))
	e.w.Write(e.hdr[:5])
	_, err = e.w.Write(b)
	return err
}

// Info, Stats and End write those records.
func (e *Encoder) Info(i *Info) error   { return e.json(recInfo, i) }
func (e *Encoder) Stats(s *Stats) error { return e.json(recStats, s) }
func (e *Encoder) End(x *End) error     { return e.json(recEnd, x) }

// Packet writes a packet record.
func (e *Encoder) Packet(h *Header, data []byte) error {
	b := e.hdr[:]
	b[0] = recPacket
	binary.LittleEndian.PutUint32(b[1:5], uint32(pktHdrLen+len(data)))
	p := b[5:]
	binary.LittleEndian.PutUint64(p[0:], uint64(h.Nanos))
	binary.LittleEndian.PutUint64(p[8:], h.ID)
	binary.LittleEndian.PutUint32(p[16:], h.Len)
	p[20], p[21], p[22], p[23] = h.Shard, h.Stage, uint8(h.Point), uint8(h.Verdict)
	p[24], p[25], p[26], p[27], p[28] = uint8(h.Reason), h.By, h.ToShard, h.InIf, h.OutIf
	p[29], p[30], p[31] = 0, 0, 0
	e.w.Write(b)
	_, err := e.w.Write(data)
	return err
}

// Flush sends what is buffered, and flushes the writer below if it can (an HTTP response).
func (e *Encoder) Flush() error {
	if err := e.w.Flush(); err != nil {
		return err
	}
	if f, ok := e.out.(interface{ Flush() error }); ok {
		return f.Flush()
	}
	return nil
}

// Decoder reads a stream.
type Decoder struct {
	r   *bufio.Reader
	buf []byte
}

// NewDecoder reads records from r.
func NewDecoder(r io.Reader) *Decoder { return &Decoder{r: bufio.NewReaderSize(r, 64<<10)} }

// maxRecord bounds a record, so a broken stream cannot make the client allocate without end.
const maxRecord = 1 << 20

// Next reads one record and returns it as *Info, *Packet (valid until the next call),
// *Stats or *End; io.EOF when the stream ended without an End.
func (d *Decoder) Next() (any, error) {
	var h [5]byte
	if _, err := io.ReadFull(d.r, h[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			err = io.EOF
		}
		return nil, err
	}
	n := binary.LittleEndian.Uint32(h[1:5])
	if n > maxRecord {
		return nil, fmt.Errorf("capture stream: a record of %d bytes", n)
	}
	if cap(d.buf) < int(n) {
		d.buf = make([]byte, n)
	}
	b := d.buf[:n]
	if _, err := io.ReadFull(d.r, b); err != nil {
		return nil, io.EOF
	}
	switch h[0] {
	case recInfo:
		v := &Info{}
		return v, json.Unmarshal(b, v)
	case recStats:
		v := &Stats{}
		return v, json.Unmarshal(b, v)
	case recEnd:
		v := &End{}
		return v, json.Unmarshal(b, v)
	case recPacket:
		if n < pktHdrLen {
			return nil, fmt.Errorf("capture stream: a packet record of %d bytes", n)
		}
		p := &Packet{Data: b[pktHdrLen:]}
		p.Nanos = int64(binary.LittleEndian.Uint64(b[0:]))
		p.ID = binary.LittleEndian.Uint64(b[8:])
		p.Len = binary.LittleEndian.Uint32(b[16:])
		p.Shard, p.Stage, p.Point, p.Verdict = b[20], b[21], pipelines.TapPoint(b[22]), pipelines.Verdict(b[23])
		p.Reason, p.By, p.ToShard, p.InIf, p.OutIf = pipelines.DropReason(b[24]), b[25], b[26], b[27], b[28]
		return p, nil
	}
	return nil, fmt.Errorf("capture stream: unknown record type %q", h[0])
}
