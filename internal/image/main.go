// Command image builds netchan's container image without a registry, a base image or a
// container engine: the statically linked netchan binary (CGO_ENABLED=0) as the only file of
// a FROM-scratch image, written as a tarball that `docker load`, `podman load` and
// containerd's `ctr image import` read.
//
//	go run ./internal/image -o netchan-image.tar                  # docker-archive (docker save's format)
//	go run ./internal/image -o netchan-oci.tar -format oci        # an OCI image layout, as a tar
//
// It runs `go build -trimpath -ldflags=-s -w` on ./cmd/netchan with CGO_ENABLED=0 and
// GOOS=linux (GOARCH from -goarch) into a temporary directory, and puts the binary at /netchan,
// mode 0755, owned by root, in one layer. The image's config: entrypoint ["/netchan"], command
// ["doctor"] (a container started without arguments checks what it was given), user 0 (the
// capabilities netchan needs are granted to root in the container: docs/deploy has the
// DaemonSet that grants exactly those), stop signal SIGTERM (netchan detaches and exits on it),
// and the OCI labels org.opencontainers.image.{title,description,source,version,revision,created},
// version and revision from `git describe --tags --always --dirty` and `git rev-parse HEAD`
// when the source is a git checkout. There is no shell and no other file in the image: probes
// and operators exec /netchan itself (`netchan status --instance NAME`).
//
// The build is reproducible for one commit: the layer's times are the commit's time (zero
// without git), so two runs on one checkout write the same image digest. The test
// (image_test.go) builds the image in both formats and reads it back with go-containerregistry.
//
// This is a tool of the repository, not part of the library (internal/layers places it with
// the tools).
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// mainPackage is the program the image runs, relative to the module root.
const mainPackage = "./cmd/netchan"

// binaryPath is where the binary sits in the image, and the entrypoint.
const binaryPath = "/netchan"

// source is the repository the labels point at.
const source = "https://github.com/netchan/netchan"

// buildFlags are go build's flags for the image's binary: no cgo (set in the environment), no
// paths of the build machine, no symbol table or DWARF (stack traces keep their function names
// and lines), no VCS stamp (the labels carry the version; the stamp would differ between a
// checkout and a clone).
var buildFlags = []string{"-trimpath", "-buildvcs=false", "-ldflags=-s -w"}

func main() {
	if err := run(context.Background(), os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

// options are the command line's.
type options struct {
	out    string // the tarball to write
	format string // "docker" or "oci"
	tag    string // the image's name
	goarch string // the binary's architecture
}

func run(ctx context.Context, args []string, log io.Writer) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	var o options
	fs.StringVar(&o.out, "o", "netchan-image.tar", "the tarball to write")
	fs.StringVar(&o.format, "format", "docker", "docker (docker save's archive: docker load, podman load, ctr image import) or oci (an OCI image layout in a tar: the same loaders, docker ≥ 25)")
	fs.StringVar(&o.tag, "tag", "netchan:latest", "the image's name and tag, as the loaders will list it")
	fs.StringVar(&o.goarch, "goarch", runtime.GOARCH, "the binary's and the image's architecture")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.format != "docker" && o.format != "oci" {
		return fmt.Errorf("-format %q: want docker or oci", o.format)
	}
	tag, err := name.NewTag(o.tag)
	if err != nil {
		return fmt.Errorf("-tag: %w", err)
	}

	root, err := moduleRoot(ctx)
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "netchan-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin := filepath.Join(tmp, "netchan")
	start := time.Now()
	if err := buildBinary(ctx, root, o.goarch, bin); err != nil {
		return err
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "built %s for linux/%s (%d bytes) in %v\n", mainPackage, o.goarch, len(binary), time.Since(start).Round(time.Millisecond))

	img, err := buildImage(binary, o.goarch, describe(ctx, root))
	if err != nil {
		return err
	}
	if err := write(img, tag, o.format, o.out); err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "wrote %s (%s, %s, image %s)\n", o.out, o.format, o.tag, digest)
	return nil
}

// moduleRoot is the directory of the main module's go.mod, from the working directory.
func moduleRoot(ctx context.Context) (string, error) {
	out, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside netchan's module: run it from the repository (go run ./internal/image)")
	}
	return filepath.Dir(gomod), nil
}

// buildBinary builds netchan, statically, for linux/goarch into out.
func buildBinary(ctx context.Context, root, goarch, out string) error {
	args := append([]string{"build", "-o", out}, buildFlags...)
	args = append(args, mainPackage)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, stderr.Bytes())
	}
	return nil
}

// version is what git says of the checkout; zero values where it says nothing.
type version struct {
	describe string    // git describe --tags --always --dirty
	revision string    // the commit
	time     time.Time // the commit's time
}

// describe asks git about the checkout at root.
func describe(ctx context.Context, root string) version {
	git := func(args ...string) string {
		cmd := exec.CommandContext(ctx, "git", args...)
		cmd.Dir = root
		out, err := cmd.Output()
		if err != nil {
			return ""
		}
		return strings.TrimSpace(string(out))
	}
	v := version{describe: git("describe", "--tags", "--always", "--dirty"), revision: git("rev-parse", "HEAD")}
	if s, err := strconv.ParseInt(git("log", "-1", "--format=%ct"), 10, 64); err == nil {
		v.time = time.Unix(s, 0).UTC()
	}
	return v
}

// labels are the image's OCI labels.
func labels(v version) map[string]string {
	l := map[string]string{
		"org.opencontainers.image.title":       "netchan",
		"org.opencontainers.image.description": "netchan, a sharded AF_XDP packet-processing framework: needs host networking and CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON (CAP_IPC_LOCK optional)",
		"org.opencontainers.image.source":      source,
		"org.opencontainers.image.version":     "devel",
	}
	if v.describe != "" {
		l["org.opencontainers.image.version"] = v.describe
	}
	if v.revision != "" {
		l["org.opencontainers.image.revision"] = v.revision
	}
	if !v.time.IsZero() {
		l["org.opencontainers.image.created"] = v.time.Format(time.RFC3339)
	}
	return l
}

// buildImage is the FROM-scratch image holding binary at /netchan.
func buildImage(binary []byte, goarch string, v version) (v1.Image, error) {
	layerTar, err := layerTar(binary, v.time)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: v.time},
			CreatedBy: "go run ./internal/image: CGO_ENABLED=0 go build " + strings.Join(buildFlags, " ") + " " + mainPackage,
			Comment:   "the netchan binary at " + binaryPath,
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch
	cf.Created = v1.Time{Time: v.time}
	cf.Author = source
	cf.Config = v1.Config{
		Entrypoint: []string{binaryPath},
		Cmd:        []string{"doctor"},
		User:       "0:0",
		WorkingDir: "/",
		StopSignal: "SIGTERM",
		Labels:     labels(v),
	}
	return mutate.ConfigFile(img, cf)
}

// layerTar is the layer's tar: one regular file, the binary at /netchan.
func layerTar(binary []byte, mtime time.Time) ([]byte, error) {
	if mtime.IsZero() {
		mtime = time.Unix(0, 0)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     strings.TrimPrefix(binaryPath, "/"),
		Mode:     0o755,
		Size:     int64(len(binary)),
		ModTime:  mtime,
		Format:   tar.FormatPAX,
	}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(binary); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// write writes img named tag to out, as a docker-archive or as an OCI image layout in a tar.
func write(img v1.Image, tag name.Tag, format, out string) error {
	if format == "docker" {
		return tarball.WriteToFile(out, tag, img)
	}
	dir, err := os.MkdirTemp("", "netchan-oci-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		// containerd (ctr image import, docker ≥ 25) names the image from the first,
		// podman and other OCI tools from the second.
		"io.containerd.image.name":          containerdName(tag),
		"org.opencontainers.image.ref.name": tag.TagStr(),
	})); err != nil {
		return err
	}
	return tarDir(dir, out)
}

// containerdName is tag as containerd spells it: docker.io/library/netchan:latest.
func containerdName(tag name.Tag) string {
	reg := tag.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + tag.RepositoryStr() + ":" + tag.TagStr()
}

// tarDir writes the files below dir into the tar out, in lexical order, with zero times.
func tarDir(dir, out string) (err error) {
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || path == dir {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: rel + "/", Mode: 0o755, Format: tar.FormatPAX})
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: rel, Mode: 0o644, Size: int64(len(b)), Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err = tw.Write(b)
		return err
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
