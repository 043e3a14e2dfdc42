"""Container images: the OCI registry client (``oci``), OCI image manifests (``oci_manifests``, not the
data manifest of :mod:`pullstudy.data.fetch`) and the synthetic image crafter (``crafter``).
"""
