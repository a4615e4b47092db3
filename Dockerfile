# ufd-solver reference image: Debian 13 (trixie) packages from env/packages.txt
# (the same list env/run and CI use) plus this package.
#   docker build -t ufd-solver .
#   docker run --rm -v "$PWD/out:/out" ufd-solver ufd run -o /out/run
#   docker run --rm ufd-solver make test
FROM debian:trixie-slim
ENV DEBIAN_FRONTEND=noninteractive
COPY env/packages.txt /tmp/packages.txt
RUN apt-get update \
 && sed -e 's/#.*//' /tmp/packages.txt | xargs apt-get install -y --no-install-recommends \
 && rm -rf /var/lib/apt/lists/*
ENV OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    OMPI_MCA_btl=self,sm OMPI_MCA_rmaps_base_oversubscribe=1 \
    OMP_NUM_THREADS=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /opt/ufd-solver
COPY . /opt/ufd-solver
RUN python3 -m pip install --no-deps --no-build-isolation --break-system-packages . \
 && ufd info
CMD ["ufd", "--help"]
