"""The predictions job's entry script, what spark-submit runs: fruits_spark.jobs.predict_uploads.main."""
import os
import sys

sys.path.append(os.path.dirname(os.path.abspath(__file__)))  # after --py-files and installs: the checkout
from fruits_spark.jobs.predict_uploads import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
