package e2e

import (
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// answer is web-python's reply, parsed.
type answer struct {
	version, host string
	visits        int64
}

var answerRE = regexp.MustCompile(`^Hello from web-python (\S+) on (\S+): (\d+) visits`)

func parseAnswer(body string) (answer, error) {
	m := answerRE.FindStringSubmatch(body)
	if m == nil {
		return answer{}, fmt.Errorf("unexpected answer %q", strings.TrimSpace(body))
	}
	n, _ := strconv.ParseInt(m[3], 10, 64)
	return answer{version: m[1], host: m[2], visits: n}, nil
}

// visit asks web-svc on addr once and parses the answer.
func (c *cluster) visit(addr, path string) (answer, error) {
	body, err := c.get(addr, path)
	if err != nil {
		return answer{}, err
	}
	return parseAnswer(body)
}

// loop requests web-svc from the client host without pause, in turn through
// every address, until stopped, keeping every outcome.
type loop struct {
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	ok       int
	failures []string
	versions []string // version of each successful answer, in order
}

func (c *cluster) startLoop(addrs []string, path string) *loop {
	l := &loop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for i := 0; ; i++ {
			select {
			case <-l.stop:
				return
			default:
			}
			addr := addrs[i%len(addrs)]
			a, err := c.visit(addr, path)
			l.mu.Lock()
			if err != nil {
				l.failures = append(l.failures, fmt.Sprintf("%s %s: %v", time.Now().Format("15:04:05.000"), addr, err))
			} else {
				l.ok++
				l.versions = append(l.versions, a.version)
			}
			l.mu.Unlock()
			time.Sleep(5 * time.Millisecond)
		}
	}()
	return l
}

// last returns the versions of the last n successful answers.
func (l *loop) last(n int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.versions) < n {
		return nil
	}
	return append([]string(nil), l.versions[len(l.versions)-n:]...)
}

func (l *loop) finish() (ok int, failures []string, versions []string) {
	close(l.stop)
	<-l.done
	return l.ok, l.failures, l.versions
}

// chiSquare is Pearson's statistic of counts against a uniform spread.
func chiSquare(counts map[string]int, n int) float64 {
	e := float64(n) / float64(len(counts))
	var x float64
	for _, o := range counts {
		d := float64(o) - e
		x += d * d / e
	}
	return x
}

// chiSquareCritical001 is the chi-square value a uniform spread exceeds
// with probability 0.001, by degrees of freedom (1..5).
var chiSquareCritical001 = []float64{math.NaN(), 10.828, 13.816, 16.266, 18.467, 20.515}

// transitions returns the distinct versions in order of appearance.
func transitions(vs []string) []string {
	var out []string
	for _, v := range vs {
		if len(out) == 0 || out[len(out)-1] != v {
			out = append(out, v)
		}
	}
	return out
}
