package netproxy

import (
	"errors"
	"fmt"

	"github.com/google/nftables"
	mdnetlink "github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// batchConn is an nftables connection for writing one batch.
type batchConn struct {
	*nftables.Conn
	transport *batchTransport // nil when the Conn talks to a test dial
}

// flush sends the queued batch and reports whether the kernel applied it.
func (c *batchConn) flush() error {
	if err := c.Conn.Flush(); err != nil {
		return err
	}
	if c.transport != nil {
		return c.transport.result()
	}
	return nil
}

func (c *batchConn) close() error {
	if c.transport != nil {
		return c.transport.nl.Close()
	}
	return c.CloseLasting()
}

// batchTransport carries google/nftables batches to the kernel with a single
// acknowledgement. The library asks for an ack on every message and an
// echo of every rule; a full sync of 10,000 Services is ~140,000 messages,
// and receiving ~240,000 replies (each its own skb and two syscalls) took
// longer than the kernel needed to apply the batch. nfnetlink reports every failing message whether or
// not an ack was asked for, so the transport asks for an ack on the last
// message only and reads until that ack: any error read before it means the
// batch was aborted (the kernel applies a batch all or nothing). It plugs
// into the library through nftables.WithTestDial, which hands it the batch.
type batchTransport struct {
	nl  *mdnetlink.Conn
	err error
	did bool
}

func dialBatch(nsFd int) (*batchConn, error) {
	nl, err := mdnetlink.Dial(unix.NETLINK_NETFILTER, &mdnetlink.Config{NetNS: max(nsFd, 0)})
	if err != nil {
		return nil, fmt.Errorf("nftables netlink: %w", err)
	}
	if err := setSendBuffer(nl); err != nil {
		nl.Close()
		return nil, err
	}
	bt := &batchTransport{nl: nl}
	c, err := nftables.New(nftables.WithTestDial(bt.roundTrip))
	if err != nil {
		nl.Close()
		return nil, err
	}
	return &batchConn{Conn: c, transport: bt}, nil
}

// setSendBuffer raises the send buffer so a whole batch fits in one
// sendmsg (the kernel refuses larger ones), with SO_SNDBUFFORCE as `nft`
// does, falling back to SO_SNDBUF (capped by net.core.wmem_max).
func setSendBuffer(nl *mdnetlink.Conn) error {
	rc, err := nl.SyscallConn()
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, batchSendBuffer) != nil {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, batchSendBuffer)
		}
	}); err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("netlink send buffer: %w", serr)
	}
	return nil
}

// batchSendBuffer is the send buffer limit (memory is only used while a
// batch is in flight; a full sync of 10,000 Services is ~20 MB).
const batchSendBuffer = 256 << 20

// roundTrip is called by the library with the batch (and with nil when it
// reads the acks it expects; it gets none, which it accepts).
func (bt *batchTransport) roundTrip(msgs []mdnetlink.Message) ([]mdnetlink.Message, error) {
	if msgs == nil {
		return nil, nil
	}
	if bt.did {
		bt.err = errors.New("nftables batch transport: second send on one connection")
		return nil, nil
	}
	bt.did = true
	if len(msgs) < 3 || msgs[0].Header.Type != mdnetlink.HeaderType(unix.NFNL_MSG_BATCH_BEGIN) ||
		msgs[len(msgs)-1].Header.Type != mdnetlink.HeaderType(unix.NFNL_MSG_BATCH_END) {
		bt.err = errors.New("nftables batch transport: not a batch")
		return nil, nil
	}
	last := len(msgs) - 2
	for i := range msgs {
		msgs[i].Header.Sequence, msgs[i].Header.PID = 0, 0 // the real socket numbers them
		// The library asks the kernel to echo every rule back (to learn
		// its handle); nothing here needs that.
		msgs[i].Header.Flags &^= unix.NLM_F_ECHO
		if i == last {
			msgs[i].Header.Flags |= mdnetlink.Acknowledge
		} else {
			msgs[i].Header.Flags &^= mdnetlink.Acknowledge
		}
	}
	sent, err := bt.nl.SendMessages(msgs)
	if err != nil {
		bt.err = fmt.Errorf("send batch of %d messages: %w", len(msgs), err)
		return nil, nil
	}
	want := sent[last].Header.Sequence
	for {
		replies, err := bt.nl.Receive()
		if err != nil {
			bt.err = fmt.Errorf("batch of %d messages rejected: %w", len(msgs), err)
			return nil, nil
		}
		for _, m := range replies {
			if m.Header.Type == mdnetlink.Error && m.Header.Sequence == want {
				return nil, nil
			}
		}
	}
}

func (bt *batchTransport) result() error {
	if !bt.did && bt.err == nil {
		return nil // nothing was queued
	}
	return bt.err
}
