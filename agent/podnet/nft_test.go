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
// it replaces orch's own table atomically and names no other table; the
// VXLAN tunnel's notrack chains come with the vxlan backend only.
func TestMasqueradeBatch(t *testing.T) {
	masq := []string{"newtable", "deltable", "newtable", "newchain",
		"newrule(payload,bitwise,cmp,payload,bitwise,cmp,immediate)",
		"newrule(payload,bitwise,cmp,payload,bitwise,cmp,immediate)",
		"newrule(payload,bitwise,cmp,masq)"}
	notrack := "newrule(payload,bitwise,cmp,meta,cmp,payload,cmp,notrack)"
	for _, tc := range []struct {
		backend Backend
		want    []string
	}{
		{BackendVXLAN, append(append([]string(nil), masq...), "newchain", notrack, "newchain", notrack)},
		{BackendHostGW, masq},
	} {
		t.Run(string(tc.backend), func(t *testing.T) {
			var sent []mdnetlink.Message
			c, err := nftables.New(nftables.WithTestDial(func(req []mdnetlink.Message) ([]mdnetlink.Message, error) {
				sent = append(sent, req...)
				return nil, nil
			}))
			if err != nil {
				t.Fatal(err)
			}
			cfg := testCfg()
			cfg.Backend = tc.backend
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
				name, exprs := decodeNames(t, m.Data[4:], op == "newrule")
				if name != DefaultTable {
					t.Errorf("%s names table %q, want only %q", op, name, DefaultTable)
				}
				if op == "newrule" {
					op += "(" + strings.Join(exprs, ",") + ")"
					// Masquerade rules match the pod CIDR; notrack rules
					// the node IP 192.0.2.1 and the VXLAN port 8472.
					want := []byte{10, 42, 5, 0}
					if op == notrack {
						want = []byte{192, 0, 2, 1}
						if !bytes.Contains(m.Data, []byte{0x21, 0x18}) {
							t.Errorf("notrack rule does not match port 8472")
						}
					}
					if !bytes.Contains(m.Data, want) {
						t.Errorf("rule does not match %v: %s", want, op)
					}
				}
				ops = append(ops, op)
			}
			if strings.Join(ops, " ") != strings.Join(tc.want, " ") {
				t.Errorf("batch\n got %v\nwant %v", ops, tc.want)
			}
		})
	}
}

// decodeNames returns the table a message names and, for a rule, its
// expression names (other messages use that attribute number otherwise:
// a chain's hook).
func decodeNames(t *testing.T, data []byte, rule bool) (table string, exprs []string) {
	ad, err := mdnetlink.NewAttributeDecoder(data)
	if err != nil {
		t.Fatal(err)
	}
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_TABLE_NAME: // == NFTA_CHAIN_TABLE == NFTA_RULE_TABLE
			table = ad.String()
		case unix.NFTA_RULE_EXPRESSIONS:
			if !rule {
				continue
			}
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
