"""The embedded demo corpus: German-English sentences about counts, ages, dates and clock times.

No download: the sentences are generated from a few templates and the number words of ``num2words``.
It is small (a vocabulary of a few hundred words per side) but not a copy task; it needs what a
translation model needs:

* reordering: the German perfect puts the participle last (``Ich habe drei rote Äpfel gekauft``,
  ``I bought three red apples``), a subordinate clause the auxiliary too (``..., dass wir ... gesehen
  haben``), German dates put the day before the month (``am dritten März`` / ``on March third``);
* morphology: adjective endings by gender and number (``einen großen Hund``, ``eine große Katze``,
  ``ein großes Haus``, ``zwei große Hunde``), verb agreement (``ich habe``/``er hat``, ``I am``/``he
  is``), plural nouns (``Äpfel``/``apples``), ``a``/``an``, ``eins``/``ein Uhr``;
* arithmetic the words hide: ``halb drei`` is ``half past two``, ``viertel vor eins`` is ``a quarter
  to one``; German number words are one compound token where English has several
  (``vierundzwanzig`` / ``twenty-four``), with the units first.

The corpus is a deterministic function of ``(pairs, split_seed)`` (Python's ``random.Random``) and
of the pinned ``num2words`` version (its spellings are the vocabulary).

Try: ``python -m qd.text.numbers 5``.
"""
from __future__ import annotations

import random
import sys

from num2words import num2words

# (German singular, German plural, gender, English singular, English plural)
NOUNS = (
    ("Hund", "Hunde", "m", "dog", "dogs"), ("Katze", "Katzen", "f", "cat", "cats"),
    ("Haus", "Häuser", "n", "house", "houses"), ("Apfel", "Äpfel", "m", "apple", "apples"),
    ("Buch", "Bücher", "n", "book", "books"), ("Blume", "Blumen", "f", "flower", "flowers"),
    ("Stuhl", "Stühle", "m", "chair", "chairs"), ("Ei", "Eier", "n", "egg", "eggs"),
    ("Flasche", "Flaschen", "f", "bottle", "bottles"), ("Vogel", "Vögel", "m", "bird", "birds"),
)
ADJECTIVES = (("groß", "big"), ("klein", "small"), ("alt", "old"), ("rot", "red"), ("neu", "new"),
              ("schön", "beautiful"))
# (German, English, person): person picks the verb forms below
SUBJECTS = (("ich", "I", "1s"), ("du", "you", "2s"), ("der Lehrer", "the teacher", "3s"),
            ("meine Schwester", "my sister", "3s"), ("wir", "we", "1p"), ("die Kinder", "the children", "3p"))
HABEN = {"1s": "habe", "2s": "hast", "3s": "hat", "1p": "haben", "3p": "haben"}
SEIN = {"1s": "bin", "2s": "bist", "3s": "ist", "1p": "sind", "3p": "sind"}
BE = {"1s": "am", "2s": "are", "3s": "is", "1p": "are", "3p": "are"}
# (German participle, English simple past)
VERBS = (("gekauft", "bought"), ("gesehen", "saw"), ("verkauft", "sold"), ("gefunden", "found"),
         ("gemalt", "painted"), ("gezählt", "counted"))
CLAUSES = (("Ich glaube", "I think"), ("Er sagt", "he says"), ("Wir wissen", "we know"))
EVENTS = (("das Treffen", "the meeting"), ("die Hochzeit", "the wedding"), ("das Konzert", "the concert"),
          ("die Prüfung", "the exam"))
MONTHS = (("Januar", "January"), ("Februar", "February"), ("März", "March"), ("April", "April"),
          ("Mai", "May"), ("Juni", "June"), ("Juli", "July"), ("August", "August"),
          ("September", "September"), ("Oktober", "October"), ("November", "November"),
          ("Dezember", "December"))
YEARS = range(1950, 2030)
# German accusative singular after "ein": article and adjective ending by gender
_ACCUSATIVE = {"m": ("einen", "en"), "f": ("eine", "e"), "n": ("ein", "es")}


def _de(n: int) -> str:
    return num2words(n, lang="de")


def _en(n: int) -> str:
    return num2words(n, lang="en")


def _object(rng: random.Random) -> tuple[str, str]:
    """A counted noun phrase in the accusative: ``zwei rote Äpfel`` / ``two red apples``."""
    sg, pl, gender, en_sg, en_pl = rng.choice(NOUNS)
    adj, en_adj = rng.choice(ADJECTIVES)
    n = rng.choice((1, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 20)) if rng.random() < 0.6 else rng.randint(2, 99)
    if n == 1:
        article, ending = _ACCUSATIVE[gender]
        return f"{article} {adj}{ending} {sg}", f"{'an' if en_adj[0] in 'aeiou' else 'a'} {en_adj} {en_sg}"
    return f"{_de(n)} {adj}e {pl}", f"{_en(n)} {en_adj} {en_pl}"


def _perfect(rng: random.Random) -> tuple[str, str]:
    subject, en_subject, person = rng.choice(SUBJECTS)
    obj, en_obj = _object(rng)
    part, past = rng.choice(VERBS)
    return f"{subject} {HABEN[person]} {obj} {part} .", f"{en_subject} {past} {en_obj} ."


def _subordinate(rng: random.Random) -> tuple[str, str]:
    clause, en_clause = rng.choice(CLAUSES)
    subject, en_subject, person = rng.choice(SUBJECTS)
    obj, en_obj = _object(rng)
    part, past = rng.choice(VERBS)
    return (f"{clause} , dass {subject} {obj} {part} {HABEN[person]} .",
            f"{en_clause} that {en_subject} {past} {en_obj} .")


def _date(rng: random.Random) -> tuple[str, str]:
    event, en_event = rng.choice(EVENTS)
    month, en_month = rng.choice(MONTHS)
    day, year = rng.randint(1, 31), rng.choice(YEARS)
    de_day = num2words(day, lang="de", to="ordinal") + "n"  # dative after "am": dritte -> dritten
    en_day = num2words(day, lang="en", to="ordinal")
    return (f"{event} ist am {de_day} {month} {num2words(year, lang='de', to='year')} .",
            f"{en_event} is on {en_month} {en_day} , {num2words(year, lang='en', to='year')} .")


def _clock(rng: random.Random) -> tuple[str, str]:
    """``halb drei`` = half past two: German names the coming hour, English the past one."""
    hour = rng.randint(1, 12)
    following = hour % 12 + 1
    kind = rng.randrange(4)
    if kind == 0:
        return f"es ist {'ein' if hour == 1 else _de(hour)} Uhr .", f"it is {_en(hour)} o'clock ."
    if kind == 1:
        return f"es ist halb {_de(following)} .", f"it is half past {_en(hour)} ."
    if kind == 2:
        return f"es ist viertel nach {_de(hour)} .", f"it is a quarter past {_en(hour)} ."
    return f"es ist viertel vor {_de(following)} .", f"it is a quarter to {_en(following)} ."


def _age(rng: random.Random) -> tuple[str, str]:
    subject, en_subject, person = rng.choice(SUBJECTS)
    n = rng.randint(1, 99)
    if n == 1:
        return f"{subject} {SEIN[person]} ein Jahr alt .", f"{en_subject} {BE[person]} one year old ."
    return f"{subject} {SEIN[person]} {_de(n)} Jahre alt .", f"{en_subject} {BE[person]} {_en(n)} years old ."


# relative frequencies of the sentence kinds
TEMPLATES = ((_perfect, 4), (_subordinate, 3), (_date, 3), (_age, 2), (_clock, 1))


def _written(s: str) -> str:
    """Raw text as people write it: a capital first letter, no space before punctuation."""
    s = s.replace(" ,", ",").replace(" .", ".")
    return s[0].upper() + s[1:]


def numbers_pairs(pairs: int, seed: int) -> list[tuple[str, str]]:
    """``pairs`` distinct (German, English) sentence pairs, a deterministic function of ``seed``."""
    rng = random.Random(seed)
    makers, weights = zip(*TEMPLATES)
    seen: set[str] = set()
    out: list[tuple[str, str]] = []
    for _ in range(50 * pairs):  # the space holds millions of sentences: this bound is never reached
        de, en = rng.choices(makers, weights)[0](rng)
        if de not in seen:
            seen.add(de)
            out.append((_written(de), _written(en)))
            if len(out) == pairs:
                return out
    raise ValueError(f"dataset.pairs={pairs}: could not generate that many distinct sentences")


def numbers_splits(pairs: int, seed: int, val_fraction: float, test_fraction: float) -> dict[str, list]:
    """Train / val / test lists of pairs: the first ``test_fraction`` of the generated pairs is the
    test set, the next ``val_fraction`` the validation set (every sentence occurs once overall)."""
    corpus = numbers_pairs(pairs, seed)
    n_test, n_val = round(test_fraction * pairs), round(val_fraction * pairs)
    if n_test < 1 or n_val < 1 or n_test + n_val >= pairs:
        raise ValueError(f"dataset.pairs={pairs} with test_fraction={test_fraction} and val_fraction="
                         f"{val_fraction} leaves an empty split")
    return {"test": corpus[:n_test], "val": corpus[n_test:n_test + n_val], "train": corpus[n_test + n_val:]}


if __name__ == "__main__":
    for de, en in numbers_pairs(int(sys.argv[1]) if len(sys.argv) > 1 else 5, 0):
        print(f"{de}\t{en}")
