from setuptools import find_packages, setup

# The twistd plugin lives in twisted/plugins (no __init__.py there, on purpose):
# it is shipped as package data of the 'twisted.plugins' namespace.
setup(
    packages=find_packages(include=["cpro", "cpro.*"]) + ["twisted.plugins"],
    package_data={"twisted.plugins": ["cpro_plugin.py"]},
)
