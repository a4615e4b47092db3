# ufd-solver: everything runs inside the reference environment through env/run
# (Debian 13 packages of env/packages.txt; built and cached on first use).
ENV    ?= env/run
NP     ?= 2
PYTEST  = python3 -m pytest -q -p no:cacheprovider

.PHONY: test test-serial test-mpi demo env shell clean

## make test: the whole suite, serial and then under mpirun -n $(NP)
test: test-serial test-mpi

test-serial:
	$(ENV) $(PYTEST) tests

test-mpi:
	$(ENV) mpirun -n $(NP) $(PYTEST) -m "not serial" tests

## make demo: the paper's 1D case (circle, γ = 100, uniform start, t = 31.25) on 2 ranks:
## the PDE, the training of M = 1024 ReLU features, and their comparison (report.md)
demo:
	$(ENV) mpirun -n $(NP) python3 -m ufd_solver validate demos/paper_circle.toml -o results
	$(ENV) python3 -m ufd_solver plot results/pde >/dev/null
	@echo "report: $(CURDIR)/results/report.md (PDE pictures in results/pde/pictures)"

env:
	$(ENV) python3 -m ufd_solver info

shell:
	$(ENV) bash

clean:
	rm -rf results ufd-output .pytest_cache
