package netproxy

import (
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"

	"github.com/google/nftables"
)

// state is what the table holds, per Service ("namespace/name").
type state struct {
	ports  map[string][]servicePort
	plans  map[string]plan
	owners map[elemKey]string // which Service an element belongs to
	// hairpin counts, per endpoint address, the Services that use it; the
	// address is in the hairpin set while the count is positive.
	hairpin map[netip.Addr]int
	// waiting are Services that wanted an element another Service owns; they
	// are synced again when the owner lets it go.
	waiting map[elemKey]map[string]bool
}

func newState() *state {
	return &state{
		ports:   map[string][]servicePort{},
		plans:   map[string]plan{},
		owners:  map[elemKey]string{},
		waiting: map[elemKey]map[string]bool{},
		hairpin: map[netip.Addr]int{},
	}
}

// change is the desired state of one Service; nil ports means deleted.
type change struct {
	key   string
	ports []servicePort
}

// syncResult tells the caller what a sync did.
type syncResult struct {
	changed  int      // Services whose objects were rewritten
	requeue  []string // Services to sync again (an element they wanted was freed)
	conflict []string // human-readable element conflicts
	flows    []flowFilter
}

// apply writes changes to the table in one batch. With full, the table is
// recreated from scratch and changes must describe every Service. On error
// nothing was changed (the kernel aborts the whole batch) and st is untouched.
func apply(conn *batchConn, tableName string, r *renderer, st *state, changes []change, full bool) (syncResult, *state, error) {
	var res syncResult
	b := newBatch(conn.Conn, tableName)
	next := st
	if full {
		next = newState()
		if err := b.recreateTable(r.mark); err != nil {
			return res, st, err
		}
	} else {
		next = &state{
			ports:   maps.Clone(st.ports),
			plans:   maps.Clone(st.plans),
			owners:  maps.Clone(st.owners),
			waiting: maps.Clone(st.waiting),
			hairpin: maps.Clone(st.hairpin),
		}
	}
	type diff struct {
		key      string
		old, new plan
	}
	var diffs []diff
	released := map[elemKey]bool{}
	for _, c := range changes {
		newPlan := r.render(c.ports)
		oldPlan := next.plans[c.key]
		// Element ownership: the first Service keeps a contested element.
		for k := range newPlan.Elems {
			if o, ok := next.owners[k]; ok && o != c.key {
				res.conflict = append(res.conflict, fmt.Sprintf("%s: %s wanted by %s is owned by %s", k.Map, describeKey(k), c.key, o))
				delete(newPlan.Elems, k)
				if next.waiting[k] == nil {
					next.waiting[k] = map[string]bool{}
				} else {
					next.waiting[k] = maps.Clone(next.waiting[k])
				}
				next.waiting[k][c.key] = true
			}
		}
		for k := range oldPlan.Elems {
			if _, keep := newPlan.Elems[k]; !keep {
				delete(next.owners, k)
				released[k] = true
			}
		}
		for k := range newPlan.Elems {
			next.owners[k] = c.key
		}
		if c.ports == nil {
			delete(next.plans, c.key)
			delete(next.ports, c.key)
		} else {
			next.plans[c.key] = newPlan
			next.ports[c.key] = c.ports
		}
		if !full && reflect.DeepEqual(oldPlan, newPlan) {
			continue
		}
		res.flows = append(res.flows, staleFlows(st.ports[c.key], c.ports, full)...)
		diffs = append(diffs, diff{key: c.key, old: oldPlan, new: newPlan})
	}
	for k := range released {
		for w := range next.waiting[k] {
			res.requeue = append(res.requeue, w)
		}
		delete(next.waiting, k)
	}
	slices.Sort(res.requeue)
	res.requeue = slices.Compact(res.requeue)
	res.changed = len(diffs)

	// 1. Delete elements that go away or change verdict.
	del := map[string][]nftables.SetElement{}
	for _, d := range diffs {
		for k, v := range d.old.Elems {
			if nv, ok := d.new.Elems[k]; !ok || nv != v {
				del[k.Map] = append(del[k.Map], element(k, v))
			}
		}
	}
	if err := b.setElems(false, del); err != nil {
		return res, st, err
	}
	// 2. Create new sets and chains (empty: rules may point at any of them).
	for _, d := range diffs {
		oldSets := map[setSpec]bool{}
		for _, s := range d.old.Sets {
			oldSets[s] = true
		}
		for _, s := range d.new.Sets {
			if !oldSets[s] {
				if err := b.addAffinitySet(s); err != nil {
					return res, st, err
				}
			}
		}
		oldChains := chainIndex(d.old)
		for _, c := range d.new.Chains {
			if _, ok := oldChains[c.Name]; !ok {
				b.addChain(c.Name)
			}
		}
	}
	// 3. (Re)write the rules of new and changed chains; empty obsolete ones.
	for _, d := range diffs {
		oldChains := chainIndex(d.old)
		newChains := chainIndex(d.new)
		for _, c := range d.new.Chains {
			if old, ok := oldChains[c.Name]; ok {
				if reflect.DeepEqual(old.Rules, c.Rules) {
					continue
				}
				b.flushChain(c.Name)
			}
			if err := b.addRules(c); err != nil {
				return res, st, err
			}
		}
		for _, c := range d.old.Chains {
			if _, ok := newChains[c.Name]; !ok {
				b.flushChain(c.Name)
			}
		}
	}
	// Hairpin addresses: reference-counted across Services.
	touched := map[netip.Addr]bool{}
	for _, d := range diffs {
		for _, ip := range d.old.Hairpin {
			touched[ip] = true
			if next.hairpin[ip]--; next.hairpin[ip] <= 0 {
				delete(next.hairpin, ip)
			}
		}
		for _, ip := range d.new.Hairpin {
			touched[ip] = true
			next.hairpin[ip]++
		}
	}
	var hpAdd, hpDel []netip.Addr
	for ip := range touched {
		want, have := next.hairpin[ip] > 0, !full && st.hairpin[ip] > 0
		switch {
		case want && !have:
			hpAdd = append(hpAdd, ip)
		case !want && have:
			hpDel = append(hpDel, ip)
		}
	}
	slices.SortFunc(hpAdd, netip.Addr.Compare)
	slices.SortFunc(hpDel, netip.Addr.Compare)
	if err := b.setHairpinElems(false, hpDel); err != nil {
		return res, st, err
	}
	if err := b.setHairpinElems(true, hpAdd); err != nil {
		return res, st, err
	}

	// 4. Add new and changed elements.
	add := map[string][]nftables.SetElement{}
	for _, d := range diffs {
		for k, v := range d.new.Elems {
			if ov, ok := d.old.Elems[k]; !ok || ov != v {
				add[k.Map] = append(add[k.Map], element(k, v))
			}
		}
	}
	if err := b.setElems(true, add); err != nil {
		return res, st, err
	}
	// 5. Delete obsolete chains and sets, now unreferenced.
	for _, d := range diffs {
		newChains := chainIndex(d.new)
		for _, c := range d.old.Chains {
			if _, ok := newChains[c.Name]; !ok {
				b.delChain(c.Name)
			}
		}
		newSets := map[setSpec]bool{}
		for _, s := range d.new.Sets {
			newSets[s] = true
		}
		for _, s := range d.old.Sets {
			if !newSets[s] {
				b.delSet(s.Name)
			}
		}
	}
	if err := conn.flush(); err != nil {
		return res, st, fmt.Errorf("nftables batch for table %s: %w", tableName, err)
	}
	return res, next, nil
}

func chainIndex(p plan) map[string]chainSpec {
	m := make(map[string]chainSpec, len(p.Chains))
	for _, c := range p.Chains {
		m[c.Name] = c
	}
	return m
}

func describeKey(k elemKey) string {
	b := []byte(k.Key)
	switch len(b) {
	case 12:
		return fmt.Sprintf("%s %s %d", netip.AddrFrom4([4]byte(b[:4])), protoName(b[4]), int(b[8])<<8|int(b[9]))
	case 8:
		return fmt.Sprintf("%s %d", protoName(b[0]), int(b[4])<<8|int(b[5]))
	}
	return fmt.Sprintf("%x", b)
}
