package netproxy

import (
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/google/nftables"
)

// tableMark is what the proxy remembers of its table after each sync, to
// notice cheaply when someone else deleted, recreated or flushed it: the
// kernel's use count of the table (chains and sets) and the handles of the
// rules in the fixed chains. A table recreated or flushed by someone else
// gets new rule handles (or none); a chain or set added or removed changes
// the use count.
type tableMark struct {
	use     uint32
	handles []uint64
}

func (m tableMark) equal(o tableMark) bool {
	return m.use == o.use && slices.Equal(m.handles, o.handles)
}

// fixedChains are the chains whose rules the mark covers.
func fixedChains(mark uint32) []string {
	var out []string
	for _, bc := range baseChains(mark) {
		out = append(out, bc.name)
	}
	return append(out, chainServices, chainEndpointCheck)
}

// readMark reads the table's current mark; found is false when the table
// does not exist. It costs a handful of small netlink dumps, independent of
// the number of Services.
func (p *Proxy) readMark() (m tableMark, found bool, err error) {
	conn, err := p.dial()
	if err != nil {
		return m, false, err
	}
	defer func() { _ = conn.CloseLasting() }()
	t, err := conn.ListTableOfFamily(p.cfg.TableName, tableFamily)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return m, false, nil
		}
		return m, false, fmt.Errorf("list table %s: %w", p.cfg.TableName, err)
	}
	m.use = t.Use
	for _, name := range fixedChains(p.cfg.MasqueradeMark) {
		rules, err := conn.GetRules(t, &nftables.Chain{Name: name, Table: t})
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				m.handles = append(m.handles, 0) // chain missing
				continue
			}
			return m, true, fmt.Errorf("rules of chain %s: %w", name, err)
		}
		for _, r := range rules {
			m.handles = append(m.handles, r.Handle)
		}
		m.handles = append(m.handles, 0) // separator
	}
	return m, true, nil
}

// recordTable remembers the table's mark after a sync.
func (p *Proxy) recordTable() error {
	m, found, err := p.readMark()
	if err != nil {
		p.tableMark, p.haveMark = tableMark{}, false
		return err
	}
	p.tableMark, p.haveMark = m, found
	return nil
}

// checkTable reports whether the table is still as the last sync left it.
// Changes deep inside a Service's own chains or in the maps are not
// detected; those are rewritten when that Service changes.
func (p *Proxy) checkTable() (ok bool, why string, err error) {
	if !p.haveMark {
		return false, "no record of the table", nil
	}
	m, found, err := p.readMark()
	if err != nil {
		return false, "", err
	}
	if !found {
		return false, "table deleted", nil
	}
	if m.use != p.tableMark.use {
		return false, fmt.Sprintf("table holds %d chains and sets, expected %d", m.use, p.tableMark.use), nil
	}
	if !m.equal(p.tableMark) {
		return false, "rules of the fixed chains changed", nil
	}
	return true, "", nil
}
