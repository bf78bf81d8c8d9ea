package main

import (
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/docker/go-units"
	"github.com/urfave/cli/v2"

	"github.com/orch-dev/orch/runtime/image"
)

// imageCommand is `orch image`: pull, import, ls and rm on the node's
// image store (<data-dir>/agent/image-store).
func imageCommand() *cli.Command {
	dataDir := func() cli.Flag {
		return &cli.StringFlag{Name: "data-dir", Value: "/var/lib/orch", Usage: "orch data directory"}
	}
	cmd := &cli.Command{
		Name:  "image",
		Usage: "manage the node's container images",
		Flags: []cli.Flag{dataDir()},
		Subcommands: []*cli.Command{
			{
				Name:      "pull",
				Usage:     "pull images from a registry (mirrors and credentials from the registries config)",
				ArgsUsage: "IMAGE...",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "registries", Value: image.DefaultRegistriesFile, Usage: "registries.yaml with mirrors and credentials"},
				},
				Action: imagePull,
			},
			{
				Name:      "import",
				Usage:     "import docker-save or OCI-layout archives (tar, gzip or zstd; - reads stdin)",
				ArgsUsage: "FILE...",
				Action:    imageImport,
			},
			{
				Name:    "ls",
				Aliases: []string{"list"},
				Usage:   "list images",
				Flags: []cli.Flag{
					&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "print image IDs only"},
					&cli.BoolFlag{Name: "digests", Usage: "show repo digests"},
				},
				Action: imageList,
			},
			{
				Name:      "rm",
				Aliases:   []string{"rmi"},
				Usage:     "remove images (refused while a container rootfs built from them is mounted)",
				ArgsUsage: "IMAGE...",
				Action:    imageRemove,
			},
		},
	}
	// --data-dir is accepted before or after the subcommand.
	for _, sub := range cmd.Subcommands {
		sub.Flags = append(sub.Flags, dataDir())
	}
	return cmd
}

// openImageStore opens the store under --data-dir (looked up on this
// command or its parent `image`).
func openImageStore(c *cli.Context, registries string) (*image.Store, error) {
	dataDir := "/var/lib/orch"
	for _, ctx := range c.Lineage() {
		if ctx.IsSet("data-dir") {
			dataDir = ctx.String("data-dir")
			break
		}
	}
	log := slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: slog.LevelWarn}))
	return image.Open(image.Config{Root: image.DefaultRoot(dataDir), RegistriesFile: registries}, log)
}

func needArgs(c *cli.Context, what string) error {
	if c.NArg() == 0 {
		return fmt.Errorf("%s: at least one argument required (see --help)", what)
	}
	return nil
}

func imagePull(c *cli.Context) error {
	if err := needArgs(c, "image pull"); err != nil {
		return err
	}
	s, err := openImageStore(c, c.String("registries"))
	if err != nil {
		return err
	}
	for _, ref := range c.Args().Slice() {
		pr := &pullPrinter{w: c.App.Writer, shown: map[string]int64{}}
		img, err := s.Pull(c.Context, ref, image.PullOptions{Progress: pr.report})
		if err != nil {
			return err
		}
		fmt.Fprintf(c.App.Writer, "%s: pulled %s (%s)\n", ref, img.ID, units.HumanSize(float64(img.Size)))
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

func imageImport(c *cli.Context) error {
	if err := needArgs(c, "image import"); err != nil {
		return err
	}
	s, err := openImageStore(c, "")
	if err != nil {
		return err
	}
	for _, f := range c.Args().Slice() {
		var imgs []*image.Image
		if f == "-" {
			imgs, err = s.Import(c.Context, os.Stdin)
		} else {
			imgs, err = s.ImportFile(c.Context, f)
		}
		if err != nil {
			return err
		}
		for _, img := range imgs {
			name := strings.Join(img.RepoTags, ", ")
			if name == "" {
				name = "<untagged>"
			}
			fmt.Fprintf(c.App.Writer, "imported %s %s (%s)\n", name, img.ID, units.HumanSize(float64(img.Size)))
		}
	}
	return nil
}

func imageList(c *cli.Context) error {
	s, err := openImageStore(c, "")
	if err != nil {
		return err
	}
	imgs, err := s.List(c.Context)
	if err != nil {
		return err
	}
	if c.Bool("quiet") {
		for _, img := range imgs {
			fmt.Fprintln(c.App.Writer, img.ID)
		}
		return nil
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 8, 3, ' ', 0)
	header := "IMAGE\tTAG\tIMAGE ID\tSIZE"
	if c.Bool("digests") {
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
			if c.Bool("digests") {
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

func imageRemove(c *cli.Context) error {
	if err := needArgs(c, "image rm"); err != nil {
		return err
	}
	s, err := openImageStore(c, "")
	if err != nil {
		return err
	}
	inUse, err := s.MountedInUse()
	if err != nil {
		return err
	}
	var errs []string
	for _, ref := range c.Args().Slice() {
		id, err := s.Remove(c.Context, ref, inUse)
		switch {
		case err != nil:
			errs = append(errs, err.Error())
		case id == "":
			fmt.Fprintf(c.App.Writer, "untagged %s\n", ref)
		default:
			fmt.Fprintf(c.App.Writer, "deleted %s\n", id)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("image rm: %s", strings.Join(errs, "; "))
	}
	return nil
}
