"""The filter stage: label rules fusing MC, tool and judge signals, then SQL filters, into training rows."""
