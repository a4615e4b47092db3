"""Open ufd run outputs in ParaView and print what a user would see.

    pvbatch tools/paraview_check.py OUTDIR [OUTDIR ...]

(inside the environment after `apt-get install paraview python3-paraview`,
under `xvfb-run -a` on a machine without a display).  For each directory it
opens rho.bp with ADIOS2VTXReader and rho.xdmf with Xdmf3ReaderT (a `ufd run`
directory) or validation.bp (a `ufd validate` directory) and prints, per time
step, the number of points, the point arrays and the range of the first density.
"""

import os
import sys

from paraview.simple import ADIOS2VTXReader, Xdmf3ReaderT  # noqa: E402

FILES = ((ADIOS2VTXReader, "rho.bp", "rho"), (Xdmf3ReaderT, "rho.xdmf", "rho"),
         (ADIOS2VTXReader, "validation.bp", "rho_pde"))

for outdir in sys.argv[1:]:
    for reader, name, field in FILES:
        if not os.path.exists(os.path.join(outdir, name)):
            continue
        r = reader(FileName=f"{outdir}/{name}")
        r.UpdatePipelineInformation()
        for t in r.TimestepValues:
            r.UpdatePipeline(t)
            arrays = sorted(r.PointData.GetArray(i).Name for i in range(len(r.PointData)))
            lo, hi = r.PointData[field].GetRange()
            print(f"{outdir} {name} ({reader.__name__}) t={t:g} "
                  f"points={r.GetDataInformation().GetNumberOfPoints()} arrays={arrays} {field}=[{lo:.4g}, {hi:.4g}]")
