// Package layers holds netchan's import rules as tests; it has no code of its own.
//
// It owns two checks that CI runs with the rest of the unit tests (no root, no network beyond
// the Go module proxy):
//
//   - The layer table (layerTable in layers_test.go): every package of the module has a layer,
//     and imports go down only. TestLayers reads the module's non-test imports from
//     `go list -deps` and fails for every import that runs upward, naming the importer, the
//     imported package and both layers, and for every package the table does not place. A new
//     package is placed by adding a line to the table. The README's layer table is printed by
//     `go test -run TestLayerTableMarkdown -v ./internal/layers`.
//   - The fresh-module test (TestFreshModule in freshmodule_test.go): a new module outside the
//     repository, which uses netchan through go.work and, separately, through a replace
//     directive, builds and vets every program in examples/ copied unchanged.
//
// The rules, each with its reason:
//
//   - Layers 1 to 6 are library (1 to 5) and programs (6). A package imports its own layer or
//     lower: what a package wants from above belongs lower down.
//   - Tools (the lab, its test helpers, the traffic generator, internal/...) are not library:
//     only programs (layer 6), other tools and tests import them, so that a library user never
//     links a namespace builder or a packet generator. Tools import library packages (layers 1 to 5) and other tools.
//   - Test files may import anything the Go toolchain allows: a stage's test may run it in the
//     lab. Upward imports from tests are logged, not failed.
package layers
