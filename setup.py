from setuptools import Extension, setup

setup(
    name="murder",
    version="0.1.0",
    description="Fast datacenter deploys over BitTorrent, on Twisted",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=["murder", "murder.tracker", "murder.peer", "twisted.plugins"],
    package_data={"murder.tracker": ["static/*.html", "static/*.js", "static/*.css"]},
    install_requires=[
        "twisted>=23.8",
        "treq>=23.11",
        "bencode.py>=4.0",
        "cryptography>=41",
        "prometheus_client>=0.17",
    ],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6", "libtorrent>=2.0", "selenium>=4.11",
                 "redis>=5", "hiredis>=2", "ruff>=0.5", "mypy>=1.10", "mypy-zope>=1.0"],
        # --store redis://… (tracker peers shared by several tracker processes).
        "redis": ["redis>=5", "hiredis>=2"],
        "bench": ["matplotlib>=3.7", "py-spy>=0.3"],
    },
    entry_points={"console_scripts": ["murder = murder.cli:main"]},
    # The UDP tracker's drain loop in C (bench/README.md, "Session 6 tracker").
    # optional: without a compiler the install still works, on the pure-Python path.
    # -ffp-contract=off: its peer rates must round exactly as store.py's do.
    ext_modules=[Extension("murder.tracker._udpfast", ["murder/tracker/_udpfast.c"],
                           extra_compile_args=["-ffp-contract=off"], optional=True)],
)
