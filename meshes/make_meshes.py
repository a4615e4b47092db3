"""Regenerate the small canonical meshes of this folder.

    env/run python3 meshes/make_meshes.py

* ``circle64.xdmf``, ``sphere3.xdmf``, ``torus2d_16.xdmf``: written by
  ``ufd mesh`` (the meshes ``ufd run`` builds itself);
* ``sphere_gmsh.msh``: a closed surface mesh of the unit sphere made with
  gmsh (OpenCASCADE sphere, 2D mesh only, characteristic length 0.3), to
  exercise ``mesh.kind = "file"`` with a gmsh manifold mesh.
"""

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def ufd_mesh(*args):
    subprocess.run([sys.executable, "-m", "ufd_solver", "mesh", *args], check=True)


def gmsh_sphere(path, h=0.3):
    import gmsh

    gmsh.initialize(["-v", "0"])
    try:
        gmsh.model.add("sphere")
        gmsh.model.occ.addSphere(0, 0, 0, 1.0)
        gmsh.model.occ.synchronize()
        surfaces = [s[1] for s in gmsh.model.getEntities(2)]
        gmsh.model.addPhysicalGroup(2, surfaces, 1)
        gmsh.option.setNumber("Mesh.CharacteristicLengthMax", h)
        gmsh.option.setNumber("Mesh.CharacteristicLengthMin", h)
        gmsh.model.mesh.generate(2)
        gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
        gmsh.write(path)
    finally:
        gmsh.finalize()


if __name__ == "__main__":
    ufd_mesh("--kind", "circle", "--resolution", "64", "-o", os.path.join(HERE, "circle64.xdmf"))
    ufd_mesh("--kind", "sphere", "--resolution", "3", "-o", os.path.join(HERE, "sphere3.xdmf"))
    ufd_mesh("--kind", "torus", "--dim", "2", "--resolution", "16", "-o", os.path.join(HERE, "torus2d_16.xdmf"))
    gmsh_sphere(os.path.join(HERE, "sphere_gmsh.msh"))
