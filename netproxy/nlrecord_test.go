package netproxy

import (
	"encoding/binary"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/google/nftables"
	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// nlMsg is a decoded nftables netlink message: its kind and the object it
// names ("chain", "set", ...), enough to assert what a batch touches.
type nlMsg struct {
	Op    string // NEWCHAIN, DELRULE, NEWSETELEM, ...
	Name  string // table, chain or set name
	Exprs []string
}

func (m nlMsg) String() string { return m.Op + " " + m.Name }

var nftOps = map[uint16]string{
	unix.NFT_MSG_NEWTABLE: "NEWTABLE", unix.NFT_MSG_DELTABLE: "DELTABLE",
	unix.NFT_MSG_NEWCHAIN: "NEWCHAIN", unix.NFT_MSG_DELCHAIN: "DELCHAIN",
	unix.NFT_MSG_NEWRULE: "NEWRULE", unix.NFT_MSG_DELRULE: "DELRULE",
	unix.NFT_MSG_NEWSET: "NEWSET", unix.NFT_MSG_DELSET: "DELSET",
	unix.NFT_MSG_NEWSETELEM: "NEWSETELEM", unix.NFT_MSG_DELSETELEM: "DELSETELEM",
}

func decodeMsg(t testing.TB, m mdnetlink.Message) nlMsg {
	t.Helper()
	typ := uint16(m.Header.Type)
	if typ == unix.NFNL_MSG_BATCH_BEGIN || typ == unix.NFNL_MSG_BATCH_END {
		return nlMsg{Op: "BATCH"}
	}
	op, ok := nftOps[typ&0xff]
	if !ok {
		return nlMsg{Op: fmt.Sprintf("type%#x", typ)}
	}
	out := nlMsg{Op: op}
	ad, err := mdnetlink.NewAttributeDecoder(m.Data[4:])
	if err != nil {
		t.Fatal(err)
	}
	for ad.Next() {
		switch {
		case op == "NEWTABLE" || op == "DELTABLE":
			if ad.Type() == unix.NFTA_TABLE_NAME {
				out.Name = ad.String()
			}
		case op == "NEWCHAIN" || op == "DELCHAIN":
			if ad.Type() == unix.NFTA_CHAIN_NAME {
				out.Name = ad.String()
			}
		case op == "NEWRULE" || op == "DELRULE":
			switch ad.Type() {
			case unix.NFTA_RULE_CHAIN:
				out.Name = ad.String()
			case unix.NFTA_RULE_EXPRESSIONS:
				ad.Nested(func(nd *mdnetlink.AttributeDecoder) error {
					for nd.Next() {
						nd.Nested(func(ed *mdnetlink.AttributeDecoder) error {
							for ed.Next() {
								if ed.Type() == unix.NFTA_EXPR_NAME {
									out.Exprs = append(out.Exprs, ed.String())
								}
							}
							return nil
						})
					}
					return nil
				})
			}
		case op == "NEWSET" || op == "DELSET":
			if ad.Type() == unix.NFTA_SET_NAME {
				out.Name = ad.String()
			}
		default: // set elements
			if ad.Type() == unix.NFTA_SET_ELEM_LIST_SET {
				out.Name = ad.String()
			}
		}
	}
	if err := ad.Err(); err != nil {
		t.Fatalf("decode %s: %v", op, err)
	}
	return out
}

// recorder is a fake kernel: it records every batch sent to it and answers
// queries with ENOENT (no table).
type recorder struct {
	mu      sync.Mutex
	batches [][]mdnetlink.Message
	fail    error
}

func (r *recorder) dial() (*batchConn, error) {
	c, err := nftables.New(nftables.WithTestDial(func(req []mdnetlink.Message) ([]mdnetlink.Message, error) {
		if req == nil {
			return nil, nil
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.fail != nil {
			return nil, r.fail
		}
		cp := make([]mdnetlink.Message, len(req))
		copy(cp, req)
		r.batches = append(r.batches, cp)
		return nil, nil
	}))
	if err != nil {
		return nil, err
	}
	return &batchConn{Conn: c}, nil
}

func (r *recorder) query() (*nftables.Conn, error) {
	return nftables.New(nftables.WithTestDial(func(req []mdnetlink.Message) ([]mdnetlink.Message, error) {
		if req == nil {
			return nil, nil
		}
		out := make([]mdnetlink.Message, 0, len(req))
		for _, m := range req {
			errno := make([]byte, 4)
			enoent := -int32(unix.ENOENT)
			binary.NativeEndian.PutUint32(errno, uint32(enoent))
			m.Header.Type = mdnetlink.Error
			m.Data = append(errno, m.Data...)
			out = append(out, m)
		}
		return out, nil
	}))
}

// last returns the decoded messages of the last batch.
func (r *recorder) last(t testing.TB) []nlMsg {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.batches) == 0 {
		return nil
	}
	var out []nlMsg
	for _, m := range r.batches[len(r.batches)-1] {
		if d := decodeMsg(t, m); d.Op != "BATCH" {
			out = append(out, d)
		}
	}
	return out
}

// all returns every decoded message of every batch.
func (r *recorder) all(t testing.TB) []nlMsg {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []nlMsg
	for _, b := range r.batches {
		for _, m := range b {
			out = append(out, decodeMsg(t, m))
		}
	}
	return out
}

func hasMsg(msgs []nlMsg, op, name string) bool {
	for _, m := range msgs {
		if m.Op == op && m.Name == name {
			return true
		}
	}
	return false
}

func msgList(msgs []nlMsg) string {
	var b strings.Builder
	for _, m := range msgs {
		fmt.Fprintf(&b, "  %s %v\n", m, m.Exprs)
	}
	return b.String()
}
