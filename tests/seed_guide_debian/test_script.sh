#!/bin/sh
# The seed guide's scenario 1 test script (`include_str!("test_script.sh")`), copied into
# the Debian guest by tests/seed_guide_debian.rs and run there.
set -e
echo "test ran on $(hostname) as $(id -un)"
python3 -c 'import sys; print("python", sys.version_info[0])'
systemctl is-active nginx
