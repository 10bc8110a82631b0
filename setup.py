from setuptools import find_packages, setup

#: What the Ledger example (examples/ledger: asyncio handlers over PostgreSQL)
#: needs beyond the SDK; the test suite runs it, so "test" includes it.
LEDGER = ["asyncpg>=0.29"]

setup(
    name="stellarouter",
    version="0.1.0",
    description="An HTTP gateway routing to microservices that dial in over binary transports",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["stellarouter", "stellarouter.*"]) + ["twisted.plugins"],
    # The vendored Swagger UI the gateway serves at /docs (docs/router/decisions.md).
    package_data={"twisted.plugins": ["stellarouter_plugins.py"],
                  "stellarouter.gateway": ["swagger_ui/*"]},
    include_package_data=False,
    install_requires=[
        # [tls]: pyOpenSSL and service-identity, which the TLS transport
        # (imported by every transport registry) needs.  26.10: the lowest
        # release the suite passes on (tox -e twisted-lowest).  24.7 fails at
        # start (no HTTPFactory(parsePOSTFormSubmission=...)); 25.5 and 26.4
        # run, but their twistd exits 0 on a usage error, so a gateway with
        # an invalid configuration would not fail loudly.
        "twisted[tls]>=26.10",
        "pyjwt[crypto]>=2.8",
        "pika>=1.3",
        "klein>=24.8",
        "pyyaml>=6",
        "attrs>=23",
        "msgspec>=0.18",
        "zope.interface>=6",
        # The gateway's GET /metrics (issue 21): the Prometheus text format
        # through the reference client rather than a hand-written exposition.
        "prometheus_client>=0.20",
    ],
    extras_require={
        # openapi-spec-validator: the gateway's OpenAPI documents are checked
        # against the OpenAPI 3.1 schema (issue 23); selenium drives the
        # headless Chromium of the /docs browser test.
        "test": ["hypothesis>=6.100", "treq>=24.9", "mypy>=1.10", "mypy-zope>=1.0",
                 "openapi-spec-validator>=0.7", "selenium>=4.20"] + LEDGER,
        "ledger": LEDGER,
    },
    entry_points={"console_scripts": ["stellarouter = stellarouter.cli:main"]},
    classifiers=["Framework :: Twisted", "Programming Language :: Python :: 3"],
)
