# Shortcuts for the scripts in scripts/ (each installs what it needs).
.PHONY: test run sandbox bench

test:       ## Everything CI runs: fmt, clippy, build, all tests
	./scripts/test.sh

run:        ## kbeast-query on a local LanceDB directory with the built-in embedder
	./scripts/run-local.sh

sandbox:    ## The zero-cluster tour: local control plane, operator, a sample project, a search
	./scripts/sandbox.sh

bench:      ## kbeast-query against ChromaDB (release build; not part of CI)
	./bench/run.sh
