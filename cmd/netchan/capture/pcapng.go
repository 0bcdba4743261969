package capture

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// pcapng (draft-ietf-opsawg-pcapng) is written here rather than with gopacket's
// pcapgo.NgWriter, which (v1.1.19) writes no packet options: a drop's reason travels as the
// packet's opt_comment, and the direction as its epb_flags.

const (
	blockSHB = 0x0A0D0D0A
	blockIDB = 0x00000001
	blockEPB = 0x00000006
	blockISB = 0x00000005

	optEnd     = 0
	optComment = 1

	shbUserAppl  = 4
	ifName       = 2
	ifDesc       = 3
	ifTsresol    = 9
	epbFlags     = 2
	isbStart     = 2
	isbEnd       = 3
	isbIfRecv    = 4
	isbIfDrop    = 5
	isbFilterAcc = 6
	isbUsrDeliv  = 8

	linkEthernet = 1
)

// Direction of a packet, for epb_flags.
const (
	DirUnknown  = 0
	DirInbound  = 1
	DirOutbound = 2
)

// PcapngWriter writes a pcapng file: one section, one interface per netchan interface
// (Ethernet, nanosecond timestamps), enhanced packet blocks with a comment, and interface
// statistics blocks.
type PcapngWriter struct {
	w      *bufio.Writer
	ifaces int
	opts   []byte
	hdr    [28]byte
}

func (p *PcapngWriter) opt(code uint16, v []byte) {
	var h [4]byte
	binary.LittleEndian.PutUint16(h[0:], code)
	binary.LittleEndian.PutUint16(h[2:], uint16(len(v)))
	p.opts = append(p.opts, h[:]...)
	p.opts = append(p.opts, v...)
	for len(p.opts)%4 != 0 {
		p.opts = append(p.opts, 0)
	}
}

func (p *PcapngWriter) optU64(code uint16, v uint64) {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	p.opt(code, b[:])
}

func (p *PcapngWriter) optTime(code uint16, nanos int64) {
	var b [8]byte
	binary.LittleEndian.PutUint32(b[0:], uint32(uint64(nanos)>>32))
	binary.LittleEndian.PutUint32(b[4:], uint32(nanos))
	p.opt(code, b[:])
}

// block writes a block: its type, total length, fixed body, variable body (padded) and the
// options gathered in p.opts.
func (p *PcapngWriter) block(typ uint32, fixed, body []byte) error {
	pad := (4 - len(body)%4) % 4
	optLen := 0
	if len(p.opts) > 0 {
		optLen = len(p.opts) + 4
	}
	total := 12 + len(fixed) + len(body) + pad + optLen
	var b [8]byte
	binary.LittleEndian.PutUint32(b[0:], typ)
	binary.LittleEndian.PutUint32(b[4:], uint32(total))
	p.w.Write(b[:])
	p.w.Write(fixed)
	p.w.Write(body)
	p.w.Write(make([]byte, pad))
	if len(p.opts) > 0 {
		p.w.Write(p.opts)
		p.w.Write([]byte{0, 0, 0, 0}) // opt_endofopt
	}
	binary.LittleEndian.PutUint32(b[0:], uint32(total))
	_, err := p.w.Write(b[:4])
	p.opts = p.opts[:0]
	return err
}

// NewPcapngWriter writes the section header and one interface description per name.
func NewPcapngWriter(w io.Writer, app string, ifaces []string, descs []string, snap int) (*PcapngWriter, error) {
	p := &PcapngWriter{w: bufio.NewWriterSize(w, 64<<10), ifaces: len(ifaces)}
	var shb [16]byte
	binary.LittleEndian.PutUint32(shb[0:], 0x1A2B3C4D)
	binary.LittleEndian.PutUint16(shb[4:], 1)
	binary.LittleEndian.PutUint16(shb[6:], 0)
	binary.LittleEndian.PutUint64(shb[8:], ^uint64(0)) // section length unknown
	p.opt(shbUserAppl, []byte(app))
	if err := p.block(blockSHB, shb[:], nil); err != nil {
		return nil, err
	}
	for i, name := range ifaces {
		var idb [8]byte
		binary.LittleEndian.PutUint16(idb[0:], linkEthernet)
		binary.LittleEndian.PutUint32(idb[4:], uint32(snap))
		p.opt(ifName, []byte(name))
		if i < len(descs) && descs[i] != "" {
			p.opt(ifDesc, []byte(descs[i]))
		}
		p.opt(ifTsresol, []byte{9})
		if err := p.block(blockIDB, idb[:], nil); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Packet writes one packet seen on interface iface at nanos (Unix nanoseconds).
func (p *PcapngWriter) Packet(iface int, nanos int64, data []byte, origLen int, comment string, dir int) error {
	if iface < 0 || iface >= p.ifaces {
		return fmt.Errorf("pcapng: no interface %d", iface)
	}
	if origLen < len(data) {
		origLen = len(data)
	}
	h := p.hdr[:20]
	binary.LittleEndian.PutUint32(h[0:], uint32(iface))
	binary.LittleEndian.PutUint32(h[4:], uint32(uint64(nanos)>>32))
	binary.LittleEndian.PutUint32(h[8:], uint32(nanos))
	binary.LittleEndian.PutUint32(h[12:], uint32(len(data)))
	binary.LittleEndian.PutUint32(h[16:], uint32(origLen))
	if comment != "" {
		p.opt(optComment, []byte(comment))
	}
	if dir != DirUnknown {
		var f [4]byte
		binary.LittleEndian.PutUint32(f[:], uint32(dir))
		p.opt(epbFlags, f[:])
	}
	return p.block(blockEPB, h, data)
}

// IfStats are an interface's figures for its statistics block.
type IfStats struct {
	Start, End int64  // Unix nanoseconds
	Matched    uint64 // isb_filteraccept: packets the capture selected
	Dropped    uint64 // isb_ifdrop: of those, the ones it could not keep
	Delivered  uint64 // isb_usrdeliv: the ones written to this file
}

// Stats writes an interface statistics block for iface at nanos.
func (p *PcapngWriter) Stats(iface int, nanos int64, s IfStats) error {
	var h [12]byte
	binary.LittleEndian.PutUint32(h[0:], uint32(iface))
	binary.LittleEndian.PutUint32(h[4:], uint32(uint64(nanos)>>32))
	binary.LittleEndian.PutUint32(h[8:], uint32(nanos))
	p.optTime(isbStart, s.Start)
	p.optTime(isbEnd, s.End)
	p.optU64(isbIfDrop, s.Dropped)
	p.optU64(isbFilterAcc, s.Matched)
	p.optU64(isbUsrDeliv, s.Delivered)
	return p.block(blockISB, h[:], nil)
}

// Flush writes what is buffered.
func (p *PcapngWriter) Flush() error { return p.w.Flush() }

// PcapngFile is what ReadPcapng found in a file: for tests and tools.
type PcapngFile struct {
	Ifaces  []string
	Packets []PcapngPacket
	Stats   map[int]IfStats // by interface, the last statistics block
}

// PcapngPacket is one enhanced packet block.
type PcapngPacket struct {
	Iface   int
	Nanos   int64
	Data    []byte
	OrigLen int
	Comment string
	Dir     int
}

// ReadPcapng reads a little-endian pcapng file as PcapngWriter writes it.
func ReadPcapng(r io.Reader) (*PcapngFile, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	f := &PcapngFile{Stats: map[int]IfStats{}}
	le := binary.LittleEndian
	for len(b) > 0 {
		if len(b) < 12 {
			return nil, errors.New("pcapng: truncated block")
		}
		typ, n := le.Uint32(b), int(le.Uint32(b[4:]))
		if n < 12 || n > len(b) || n%4 != 0 || int(le.Uint32(b[n-4:])) != n {
			return nil, fmt.Errorf("pcapng: bad block length %d", n)
		}
		body := b[8 : n-4]
		opts := func(from int) map[uint16][]byte {
			m := map[uint16][]byte{}
			o := body[from:]
			for len(o) >= 4 {
				code, l := le.Uint16(o), int(le.Uint16(o[2:]))
				if code == optEnd || 4+l > len(o) {
					break
				}
				m[code] = o[4 : 4+l]
				o = o[4+(l+3)/4*4:]
			}
			return m
		}
		switch typ {
		case blockSHB:
			if le.Uint32(body) != 0x1A2B3C4D {
				return nil, errors.New("pcapng: not little-endian")
			}
		case blockIDB:
			f.Ifaces = append(f.Ifaces, string(opts(8)[ifName]))
		case blockEPB:
			capLen := int(le.Uint32(body[12:]))
			p := PcapngPacket{Iface: int(le.Uint32(body)), Nanos: int64(uint64(le.Uint32(body[4:]))<<32 | uint64(le.Uint32(body[8:]))),
				Data: append([]byte(nil), body[20:20+capLen]...), OrigLen: int(le.Uint32(body[16:]))}
			o := opts(20 + (capLen+3)/4*4)
			p.Comment = string(o[optComment])
			if v := o[epbFlags]; len(v) == 4 {
				p.Dir = int(le.Uint32(v) & 3)
			}
			f.Packets = append(f.Packets, p)
		case blockISB:
			o := opts(12)
			u := func(c uint16) uint64 {
				if v := o[c]; len(v) == 8 {
					return le.Uint64(v)
				}
				return 0
			}
			t := func(c uint16) int64 {
				if v := o[c]; len(v) == 8 {
					return int64(uint64(le.Uint32(v))<<32 | uint64(le.Uint32(v[4:])))
				}
				return 0
			}
			f.Stats[int(le.Uint32(body))] = IfStats{Start: t(isbStart), End: t(isbEnd), Matched: u(isbFilterAcc), Dropped: u(isbIfDrop), Delivered: u(isbUsrDeliv)}
		}
		b = b[n:]
	}
	return f, nil
}
