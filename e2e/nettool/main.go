// Command nettool is the end-to-end tests' in-pod network tool, a static
// binary put into a test image next to busybox:
//
//	nettool serve [-tcp :8080] [-udp :8081]   answer every TCP connection and UDP datagram with the hostname
//	nettool dial [-n N] [-timeout 2s] [-sport P] tcp|udp HOST:PORT   print the answers of N connections
//	nettool lookup [-type A|SRV|CNAME] [-wait D] NAME   resolve through the pod's resolv.conf; with -wait, retry until found and print when
//
// It exits non-zero with the error on stderr when a dial or lookup fails.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: nettool serve|dial|lookup ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "dial":
		err = dial(os.Args[2:])
	case "lookup":
		err = lookup(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nettool:", err)
		os.Exit(1)
	}
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	tcpAddr := fs.String("tcp", ":8080", "TCP listen address")
	udpAddr := fs.String("udp", ":8081", "UDP listen address")
	if err := fs.Parse(args); err != nil {
		return err
	}
	host, _ := os.Hostname()
	ln, err := net.Listen("tcp", *tcpAddr)
	if err != nil {
		return err
	}
	pc, err := net.ListenPacket("udp", *udpAddr)
	if err != nil {
		return err
	}
	errc := make(chan error, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				errc <- err
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(5 * time.Second))
				fmt.Fprintf(c, "%s %s\n", host, c.RemoteAddr())
			}()
		}
	}()
	go func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				errc <- err
				return
			}
			_, _ = pc.WriteTo([]byte(host+" "+from.String()+"\n"), from)
		}
	}()
	fmt.Printf("serving tcp %s udp %s as %s\n", *tcpAddr, *udpAddr, host)
	return <-errc
}

func dial(args []string) error {
	fs := flag.NewFlagSet("dial", flag.ContinueOnError)
	timeout := fs.Duration("timeout", 2*time.Second, "give up after")
	sport := fs.Int("sport", 0, "local port (UDP)")
	n := fs.Int("n", 1, "connections, one after the other")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 2 {
		return errors.New("usage: dial [-n N] tcp|udp HOST:PORT")
	}
	for i := 0; i < *n; i++ {
		if err := dialOnce(fs.Arg(0), fs.Arg(1), *timeout, *sport); err != nil {
			return err
		}
	}
	return nil
}

func dialOnce(network, addr string, timeout time.Duration, sport int) error {
	d := net.Dialer{Timeout: timeout}
	if network == "udp" && sport != 0 {
		d.LocalAddr = &net.UDPAddr{Port: sport}
	}
	c, err := d.Dial(network, addr)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if network == "udp" {
		if _, err := c.Write([]byte("hello\n")); err != nil {
			return err
		}
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s %s: %w", network, addr, err)
	}
	fmt.Print(line)
	return nil
}

func lookup(args []string) error {
	fs := flag.NewFlagSet("lookup", flag.ContinueOnError)
	typ := fs.String("type", "A", "A, SRV or CNAME")
	wait := fs.Duration("wait", 0, "retry until found or this long has passed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: lookup [-type T] [-wait D] NAME")
	}
	name := fs.Arg(0)
	deadline := time.Now().Add(*wait)
	for {
		out, err := lookupOnce(*typ, name)
		if err == nil {
			if *wait > 0 {
				fmt.Printf("found-at %d\n", time.Now().UnixNano())
			}
			fmt.Println(strings.Join(out, "\n"))
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func lookupOnce(typ, name string) ([]string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	var r net.Resolver
	switch typ {
	case "A":
		ips, err := r.LookupHost(ctx, name)
		sort.Strings(ips)
		return ips, err
	case "SRV":
		_, srvs, err := r.LookupSRV(ctx, "", "", name)
		var out []string
		for _, s := range srvs {
			out = append(out, fmt.Sprintf("%s %d", s.Target, s.Port))
		}
		sort.Strings(out)
		return out, err
	case "CNAME":
		c, err := r.LookupCNAME(ctx, name)
		return []string{c}, err
	}
	return nil, fmt.Errorf("unknown type %q", typ)
}
