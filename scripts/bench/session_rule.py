"""The stack's enrichment rule as the Python glue it replaces wrote it (the Flink job's rule):
country from rounded coordinates, accepted/rejected status, formatted timestamp."""
import datetime

COUNTRIES = {
    (39.0, 22.0): ("Greece", "GR"), (43.0, 25.0): ("Bulgaria", "BG"), (41.0, 20.0): ("Albania", "AL"),
    (35.0, 33.0): ("Cyprus", "CY"), (54.0, -2.0): ("United Kingdom", "GB"), (38.0, -97.0): ("United States", "US"),
    (51.0, 9.0): ("Germany", "DE"), (46.0, 2.0): ("France", "FR"), (42.8333, 12.8333): ("Italy", "IT"),
    (44.0, 21.0): ("Serbia", "RS"), (45.1667, 15.5): ("Croatia", "HR"), (52.5, 5.75): ("Netherlands", "NL"),
    (39.0, 35.0): ("Turkey", "TR"), (40.0, -4.0): ("Spain", "ES"), (52.0, 20.0): ("Poland", "PL"),
    (39.5, -8.0): ("Portugal", "PT"), (62.0, 15.0): ("Sweden", "SE"), (49.75, 15.5): ("Czech Republic", "CZ"),
    (56.0, 10.0): ("Denmark", "DK"), (47.3333, 13.3333): ("Austria", "AT"), (59.0, 26.0): ("Estonia", "EE"),
}


def enrich(session):
    name, code = COUNTRIES.get((round(session["latitude"], 4), round(session["longitude"], 4)), ("Unknown", "Unknown"))
    session["timestamp"] = datetime.datetime.fromtimestamp(session["timestamp"], datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S%z")
    session["country"], session["country_code"] = name, code
    session["status"] = "accepted" if "Greece" in name else "rejected"
    return session
