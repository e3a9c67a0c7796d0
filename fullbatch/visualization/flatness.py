"""The flatness number of a loss landscape: how much the training loss rises at a fixed distance from the model."""
import numpy as np


def flatness(data, radius):
    """{label: loss at the model, mean train-loss increase at distance `radius` along each direction axis}."""
    result = {}
    for index, label in enumerate(data["labels"]):
        loss = data["train_loss"][index]
        if "betas" in data:
            middle = len(data["betas"]) // 2
            rows, columns = loss[:, middle], loss[len(data["alphas"]) // 2, :]
            centre = np.interp(0.0, data["alphas"], rows)
            around = [np.interp(r, data["alphas"], rows) for r in (-radius, radius)]
            around += [np.interp(r, data["betas"], columns) for r in (-radius, radius)]
        else:
            centre = np.interp(0.0, data["alphas"], loss)
            around = [np.interp(r, data["alphas"], loss) for r in (-radius, radius)]
        result[str(label)] = dict(loss_at_model=float(centre), loss_increase=float(np.mean(around) - centre),
                                  radius=radius)
    return result
