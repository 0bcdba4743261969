package main

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestImage runs the command as `go run ./internal/image -o FILE` does, for both formats,
// and reads each tarball back with go-containerregistry's readers: one layer holding one
// file, /netchan, executable, statically linked, byte for byte a fresh build of cmd/netchan
// (a second `go build` with the same flags, which the build cache makes cheap: the one
// expensive build is the command's); the entrypoint, user and labels. It needs no root and
// no container engine; the first build of netchan takes 20-60 s on a 2-core machine.
func TestImage(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	dir := t.TempDir()
	dockerTar, ociTar := filepath.Join(dir, "netchan-image.tar"), filepath.Join(dir, "netchan-oci.tar")

	start := time.Now()
	var log bytes.Buffer
	if err := run(ctx, []string{"-o", dockerTar}, &log); err != nil {
		t.Fatalf("run -o %s: %v\n%s", dockerTar, err, log.Bytes())
	}
	t.Logf("docker-archive built in %v:\n%s", time.Since(start).Round(time.Millisecond), log.Bytes())
	start = time.Now()
	log.Reset()
	if err := run(ctx, []string{"-o", ociTar, "-format", "oci", "-tag", "netchan:test"}, &log); err != nil {
		t.Fatalf("run -format oci: %v\n%s", err, log.Bytes())
	}
	t.Logf("OCI layout built in %v:\n%s", time.Since(start).Round(time.Millisecond), log.Bytes())

	// The fresh build to compare with.
	start = time.Now()
	root, err := moduleRoot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	fresh := filepath.Join(dir, "netchan")
	if err := buildBinary(ctx, root, runtime.GOARCH, fresh); err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(fresh)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("fresh build: %d bytes in %v", len(want), time.Since(start).Round(time.Millisecond))
	v := describe(ctx, root)

	t.Run("docker-archive", func(t *testing.T) {
		tag, err := name.NewTag("netchan:latest")
		if err != nil {
			t.Fatal(err)
		}
		img, err := tarball.ImageFromPath(dockerTar, &tag)
		if err != nil {
			t.Fatalf("tarball.ImageFromPath(%s, netchan:latest): %v", dockerTar, err)
		}
		checkImage(t, img, want, v)
	})

	t.Run("oci-layout", func(t *testing.T) {
		layoutDir := filepath.Join(dir, "layout")
		untar(t, ociTar, layoutDir)
		idx, err := layout.ImageIndexFromPath(layoutDir)
		if err != nil {
			t.Fatalf("layout.ImageIndexFromPath: %v", err)
		}
		im, err := idx.IndexManifest()
		if err != nil {
			t.Fatal(err)
		}
		if len(im.Manifests) != 1 {
			t.Fatalf("index.json lists %d manifests, want 1", len(im.Manifests))
		}
		desc := im.Manifests[0]
		if got := desc.Annotations["org.opencontainers.image.ref.name"]; got != "test" {
			t.Errorf("ref.name annotation %q, want %q", got, "test")
		}
		if got := desc.Annotations["io.containerd.image.name"]; got != "docker.io/library/netchan:test" {
			t.Errorf("io.containerd.image.name annotation %q, want docker.io/library/netchan:test", got)
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkImage(t, img, want, v)
	})
}

// checkImage checks that img holds exactly binary at /netchan and is configured to run it.
func checkImage(t *testing.T, img v1.Image, binary []byte, v version) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	if !slices.Equal(cf.Config.Entrypoint, []string{"/netchan"}) {
		t.Errorf("entrypoint %q, want [/netchan]", cf.Config.Entrypoint)
	}
	if !slices.Equal(cf.Config.Cmd, []string{"doctor"}) {
		t.Errorf("cmd %q, want [doctor]", cf.Config.Cmd)
	}
	if cf.Config.User != "0:0" {
		t.Errorf("user %q, want 0:0", cf.Config.User)
	}
	if len(cf.Config.Env) != 0 || len(cf.Config.Shell) != 0 {
		t.Errorf("env %q, shell %q: want neither", cf.Config.Env, cf.Config.Shell)
	}
	wantVersion := v.describe
	if wantVersion == "" {
		wantVersion = "devel"
	}
	for k, want := range map[string]string{
		"org.opencontainers.image.source":   "https://github.com/netchan/netchan",
		"org.opencontainers.image.title":    "netchan",
		"org.opencontainers.image.version":  wantVersion,
		"org.opencontainers.image.revision": v.revision,
	} {
		if got := cf.Config.Labels[k]; got != want {
			t.Errorf("label %s = %q, want %q", k, got, want)
		}
	}

	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	if len(cf.RootFS.DiffIDs) != 1 {
		t.Fatalf("config lists %d diff IDs, want 1", len(cf.RootFS.DiffIDs))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	var files []string
	var got []byte
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("layer: %v", err)
		}
		p := "/" + strings.TrimPrefix(strings.TrimPrefix(h.Name, "./"), "/")
		files = append(files, p)
		if p != "/netchan" {
			continue
		}
		if h.Typeflag != tar.TypeReg {
			t.Errorf("/netchan is of type %q, want a regular file", h.Typeflag)
		}
		if h.Mode&0o111 != 0o111 || h.Mode&0o7000 != 0 {
			t.Errorf("/netchan has mode %o, want executable by all, no setuid/setgid", h.Mode)
		}
		if h.Uid != 0 || h.Gid != 0 {
			t.Errorf("/netchan is owned by %d:%d, want 0:0", h.Uid, h.Gid)
		}
		if h.Size != int64(len(binary)) {
			t.Errorf("/netchan is %d bytes, a fresh build %d", h.Size, len(binary))
		}
		if got, err = io.ReadAll(tr); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(files, []string{"/netchan"}) {
		t.Fatalf("the layer holds %q, want exactly [/netchan]", files)
	}
	if sha256.Sum256(got) != sha256.Sum256(binary) {
		t.Errorf("/netchan differs from a fresh build (%d and %d bytes)", len(got), len(binary))
	}
	checkStatic(t, got)
}

// checkStatic checks that the ELF binary needs no dynamic loader and no shared library: a
// FROM-scratch image has neither.
func checkStatic(t *testing.T, binary []byte) {
	t.Helper()
	f, err := elf.NewFile(bytes.NewReader(binary))
	if err != nil {
		t.Fatalf("/netchan is not an ELF file: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("/netchan has a %v program header: not statically linked", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("/netchan needs shared libraries %q", libs)
	}
}

// untar extracts the tar file src into dir.
func untar(t *testing.T, src, dir string) {
	t.Helper()
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("%s: %v", src, err)
		}
		p := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("%s: entry %q leaves the directory", src, h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		default:
			t.Fatalf("%s: entry %q of type %q", src, h.Name, h.Typeflag)
		}
	}
}

// TestLayerTarReproducible: the layer of one binary and one commit time is the same bytes
// each time, so the image's digest depends only on the binary and the commit.
func TestLayerTarReproducible(t *testing.T) {
	bin := []byte("\x7fELF not really")
	a, err := layerTar(bin, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := layerTar(bin, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Fatal("two layers of one binary differ")
	}
	img1, err := buildImage(bin, "amd64", version{describe: "v0.1.0", time: time.Unix(1700000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	img2, err := buildImage(bin, "amd64", version{describe: "v0.1.0", time: time.Unix(1700000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	d1, err := img1.Digest()
	if err != nil {
		t.Fatal(err)
	}
	d2, err := img2.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 {
		t.Fatalf("two images of one binary and one commit: %s and %s", d1, d2)
	}
}
