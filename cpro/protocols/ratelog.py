"""Rate-limiting of log lines that a peer or an attacker can trigger."""


def worth_logging(count):
    """Log the 1st, 10th, 100th... occurrence: a flood must not flood the log."""
    while count >= 10 and count % 10 == 0:
        count //= 10
    return count == 1
