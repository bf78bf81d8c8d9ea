package podnet

import (
	"bytes"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/nftables"
	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// TestMasqueradeBatch checks, without root, the netlink batch Init sends:
// it replaces orch's own table atomically and names no other table.
func TestMasqueradeBatch(t *testing.T) {
	var sent []mdnetlink.Message
	c, err := nftables.New(nftables.WithTestDial(func(req []mdnetlink.Message) ([]mdnetlink.Message, error) {
		sent = append(sent, req...)
		return nil, nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	cfg := testCfg()
	cfg.PodCIDR = netip.MustParsePrefix("10.42.5.0/24")
	queueMasquerade(c, cfg)
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	var ops []string
	for _, m := range sent {
		typ := uint16(m.Header.Type)
		if typ == unix.NFNL_MSG_BATCH_BEGIN || typ == unix.NFNL_MSG_BATCH_END {
			continue
		}
		op := map[uint16]string{unix.NFT_MSG_NEWTABLE: "newtable", unix.NFT_MSG_DELTABLE: "deltable",
			unix.NFT_MSG_NEWCHAIN: "newchain", unix.NFT_MSG_NEWRULE: "newrule"}[typ&0xff]
		if op == "" {
			t.Fatalf("unexpected message type %#x", typ)
		}
		name, exprs := decodeNames(t, m.Data[4:])
		if name != DefaultTable {
			t.Errorf("%s names table %q, want only %q", op, name, DefaultTable)
		}
		if op == "newrule" {
			op += "(" + strings.Join(exprs, ",") + ")"
			if !bytes.Contains(m.Data, []byte{10, 42, 5, 0}) {
				t.Errorf("rule does not match the pod CIDR 10.42.5.0: %s", op)
			}
		}
		ops = append(ops, op)
	}
	want := []string{"newtable", "deltable", "newtable", "newchain",
		"newrule(payload,bitwise,cmp,payload,bitwise,cmp,immediate)",
		"newrule(payload,bitwise,cmp,payload,bitwise,cmp,immediate)",
		"newrule(payload,bitwise,cmp,masq)"}
	if strings.Join(ops, " ") != strings.Join(want, " ") {
		t.Errorf("batch\n got %v\nwant %v", ops, want)
	}
}

// decodeNames returns the table a message names and a rule's expression
// names.
func decodeNames(t *testing.T, data []byte) (table string, exprs []string) {
	ad, err := mdnetlink.NewAttributeDecoder(data)
	if err != nil {
		t.Fatal(err)
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TABLE_NAME: // == NFTA_CHAIN_TABLE == NFTA_RULE_TABLE
			table = ad.String()
		case unix.NFTA_RULE_EXPRESSIONS:
			ad.Nested(func(nd *mdnetlink.AttributeDecoder) error {
				for nd.Next() {
					nd.Nested(func(ed *mdnetlink.AttributeDecoder) error {
						for ed.Next() {
							if ed.Type() == unix.NFTA_EXPR_NAME {
								exprs = append(exprs, ed.String())
							}
						}
						return nil
					})
				}
				return nil
			})
		}
	}
	if err := ad.Err(); err != nil {
		t.Fatal(err)
	}
	return table, exprs
}
