package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/docker/go-units"

	"github.com/orch-dev/orch/internal/cli"
	"github.com/orch-dev/orch/runtime/image"
)

// imageCmd is `orch image`'s flags and output.
type imageCmd struct {
	stdout, stderr io.Writer
	dataDir        string // --data-dir, of `image` or of the subcommand (which wins)
	registries     string // image pull --registries
	quiet, digests bool   // image ls
}

// imageCommand is `orch image`: pull, import, ls and rm on the node's
// image store (<data-dir>/agent/image-store).
func imageCommand(stdout, stderr io.Writer) *cli.Command {
	ic := &imageCmd{stdout: stdout, stderr: stderr}
	// --data-dir is accepted before or after the subcommand: both flags
	// set the same variable, the subcommand's last.
	dataDir := func() *cli.Flag {
		return &cli.Flag{Name: "data-dir", Value: cli.String(&ic.dataDir, "/var/lib/orch"), Usage: "orch data directory"}
	}
	return &cli.Command{
		Name:  "image",
		Usage: "manage the node's container images",
		Flags: []*cli.Flag{dataDir()},
		Commands: []*cli.Command{
			{
				Name:      "pull",
				Usage:     "pull images from a registry (mirrors and credentials from the registries config)",
				ArgsUsage: "IMAGE...",
				Flags: []*cli.Flag{
					{Name: "registries", Value: cli.String(&ic.registries, image.DefaultRegistriesFile), Usage: "registries.yaml with mirrors and credentials"},
					dataDir(),
				},
				Action: ic.pull,
			},
			{
				Name:      "import",
				Usage:     "import docker-save or OCI-layout archives (tar, gzip or zstd; - reads stdin)",
				ArgsUsage: "FILE...",
				Flags:     []*cli.Flag{dataDir()},
				Action:    ic.importFiles,
			},
			{
				Name:    "ls",
				Aliases: []string{"list"},
				Usage:   "list images",
				Flags: []*cli.Flag{
					{Name: "quiet", Aliases: []string{"q"}, Value: cli.Bool(&ic.quiet, false), Usage: "print image IDs only"},
					{Name: "digests", Value: cli.Bool(&ic.digests, false), Usage: "show repo digests"},
					dataDir(),
				},
				Action: ic.list,
			},
			{
				Name:      "rm",
				Aliases:   []string{"rmi"},
				Usage:     "remove images (refused while a container rootfs built from them is mounted)",
				ArgsUsage: "IMAGE...",
				Flags:     []*cli.Flag{dataDir()},
				Action:    ic.remove,
			},
		},
	}
}

// openStore opens the image store under --data-dir.
func (ic *imageCmd) openStore(registries string) (*image.Store, error) {
	log := slog.New(slog.NewTextHandler(ic.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return image.Open(image.Config{Root: image.DefaultRoot(ic.dataDir), RegistriesFile: registries}, log)
}

func needArgs(args []string, what string) error {
	if len(args) == 0 {
		return fmt.Errorf("%s: at least one argument required (see --help)", what)
	}
	return nil
}

func (ic *imageCmd) pull(ctx context.Context, args []string) error {
	if err := needArgs(args, "image pull"); err != nil {
		return err
	}
	s, err := ic.openStore(ic.registries)
	if err != nil {
		return err
	}
	for _, ref := range args {
		pr := &pullPrinter{w: ic.stdout, shown: map[string]int64{}}
		img, err := s.Pull(ctx, ref, image.PullOptions{Progress: pr.report})
		if err != nil {
			return err
		}
		fmt.Fprintf(ic.stdout, "%s: pulled %s (%s)\n", ref, img.ID, units.HumanSize(float64(img.Size)))
	}
	return nil
}

// pullPrinter prints one line per layer each 10% (layers over 1 MB) and
// when it is done.
type pullPrinter struct {
	mu    sync.Mutex
	w     io.Writer
	shown map[string]int64 // layer → last printed tenth
}

func (p *pullPrinter) report(pr image.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	id := strings.TrimPrefix(pr.Layer, "sha256:")
	if len(id) > 12 {
		id = id[:12]
	}
	switch {
	case pr.Cached:
		fmt.Fprintf(p.w, "%s: already present\n", id)
	case pr.Done:
		fmt.Fprintf(p.w, "%s: done %s\n", id, units.HumanSize(float64(pr.Complete)))
	case pr.Total > 1<<20:
		tenth := pr.Complete * 10 / pr.Total
		if tenth > p.shown[pr.Layer] {
			p.shown[pr.Layer] = tenth
			fmt.Fprintf(p.w, "%s: %s / %s\n", id, units.HumanSize(float64(pr.Complete)), units.HumanSize(float64(pr.Total)))
		}
	}
}

func (ic *imageCmd) importFiles(ctx context.Context, args []string) error {
	if err := needArgs(args, "image import"); err != nil {
		return err
	}
	s, err := ic.openStore("")
	if err != nil {
		return err
	}
	for _, f := range args {
		var imgs []*image.Image
		if f == "-" {
			imgs, err = s.Import(ctx, os.Stdin)
		} else {
			imgs, err = s.ImportFile(ctx, f)
		}
		if err != nil {
			return err
		}
		for _, img := range imgs {
			name := strings.Join(img.RepoTags, ", ")
			if name == "" {
				name = "<untagged>"
			}
			fmt.Fprintf(ic.stdout, "imported %s %s (%s)\n", name, img.ID, units.HumanSize(float64(img.Size)))
		}
	}
	return nil
}

func (ic *imageCmd) list(ctx context.Context, _ []string) error {
	s, err := ic.openStore("")
	if err != nil {
		return err
	}
	imgs, err := s.List(ctx)
	if err != nil {
		return err
	}
	if ic.quiet {
		for _, img := range imgs {
			fmt.Fprintln(ic.stdout, img.ID)
		}
		return nil
	}
	tw := tabwriter.NewWriter(ic.stdout, 0, 8, 3, ' ', 0)
	header := "IMAGE\tTAG\tIMAGE ID\tSIZE"
	if ic.digests {
		header = "IMAGE\tTAG\tDIGEST\tIMAGE ID\tSIZE"
	}
	fmt.Fprintln(tw, header)
	for _, img := range imgs {
		id := strings.TrimPrefix(img.ID, "sha256:")[:12]
		size := units.HumanSize(float64(img.Size))
		tags := img.RepoTags
		if len(tags) == 0 {
			tags = []string{"<none>:<none>"}
		}
		for _, t := range tags {
			i := strings.LastIndex(t, ":")
			repo, tag := t[:i], t[i+1:]
			if ic.digests {
				digest := "<none>"
				for _, d := range img.RepoDigests {
					if r, dg, _ := strings.Cut(d, "@"); r == repo {
						digest = dg
						break
					}
				}
				fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", repo, tag, digest, id, size)
				continue
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", repo, tag, id, size)
		}
	}
	return tw.Flush()
}

func (ic *imageCmd) remove(ctx context.Context, args []string) error {
	if err := needArgs(args, "image rm"); err != nil {
		return err
	}
	s, err := ic.openStore("")
	if err != nil {
		return err
	}
	inUse, err := s.MountedInUse()
	if err != nil {
		return err
	}
	var errs []string
	for _, ref := range args {
		id, err := s.Remove(ctx, ref, inUse)
		switch {
		case err != nil:
			errs = append(errs, err.Error())
		case id == "":
			fmt.Fprintf(ic.stdout, "untagged %s\n", ref)
		default:
			fmt.Fprintf(ic.stdout, "deleted %s\n", id)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("image rm: %s", strings.Join(errs, "; "))
	}
	return nil
}
