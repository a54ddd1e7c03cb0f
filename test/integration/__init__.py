
import os

# The source checkout these tests belong to (examples/, tap/ and the cpro
# package under test).
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
