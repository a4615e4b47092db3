"""Open ufd run outputs in ParaView and print what a user would see.

    pvbatch tools/paraview_check.py OUTDIR [OUTDIR ...]

(inside the environment after `apt-get install paraview python3-paraview`,
under `xvfb-run -a` on a machine without a display).  For each directory it
opens rho.bp with ADIOS2VTXReader and rho.xdmf with Xdmf3ReaderT and prints,
per time step, the number of points, the point arrays and the range of rho.
"""

import sys

from paraview.simple import ADIOS2VTXReader, Xdmf3ReaderT  # noqa: E402

for outdir in sys.argv[1:]:
    for reader, name in ((ADIOS2VTXReader, "rho.bp"), (Xdmf3ReaderT, "rho.xdmf")):
        r = reader(FileName=f"{outdir}/{name}")
        r.UpdatePipelineInformation()
        for t in r.TimestepValues:
            r.UpdatePipeline(t)
            arrays = sorted(r.PointData.GetArray(i).Name for i in range(len(r.PointData)))
            lo, hi = r.PointData["rho"].GetRange()
            print(f"{outdir} {reader.__name__} t={t:g} points={r.GetDataInformation().GetNumberOfPoints()} "
                  f"arrays={arrays} rho=[{lo:.4g}, {hi:.4g}]")
