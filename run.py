"""Start Parley: `python run.py [--host H] [--port P] [--reload] [--workers N]`."""

import argparse
import logging

import uvicorn

from app.config import Settings


def main() -> None:
    settings = Settings()
    parser = argparse.ArgumentParser(description="Run the Parley server.")
    parser.add_argument("--host", default=settings.host)
    parser.add_argument("--port", type=int, default=settings.port)
    parser.add_argument("--reload", action="store_true", help="restart on code changes")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        reload=args.reload,
        workers=args.workers,
        log_level=settings.log_level,
    )


if __name__ == "__main__":
    main()
