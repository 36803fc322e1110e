"""Headless Debian chromium driven by Selenium, and the Airflow 3.3 UI as a person uses it.

Selectors are Airflow's own: the data-testid names its UI e2e tests use (trigger-dag-button,
trigger-dag-submit, dag-id, toggle-pause) and the trigger form's `element_<param>` fields, each in
a Chakra field group holding the param's title (label) and description (helper text).
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1400,1000")
WAIT_SECONDS = 30


def find_chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


class Browser:
    def __init__(self, base_url: str, binaries: tuple[str, str]):
        self.base_url = base_url
        self.profile = tempfile.mkdtemp(prefix="fruits-ui-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = binaries[0]
        for flag in CHROMIUM_FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={self.profile}")
        self.driver = webdriver.Chrome(service=Service(binaries[1]), options=options)

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self.profile, ignore_errors=True)

    # --- waiting -----------------------------------------------------------------------------------
    def wait(self, predicate, what: str, timeout: float = WAIT_SECONDS):
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = predicate()
                if value:
                    return value
            except (NoSuchElementException, StaleElementReferenceException):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"UI: timed out after {timeout:.0f}s waiting for {what} on "
                                     f"{self.driver.current_url}")
            time.sleep(0.25)

    def element(self, css: str, timeout: float = WAIT_SECONDS):
        return self.wait(lambda: self.driver.find_element(By.CSS_SELECTOR, css), css, timeout)

    def elements(self, css: str):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def open(self, path: str) -> None:
        self.driver.get(self.base_url + path)

    def body_text(self) -> str:
        return self.driver.find_element(By.TAG_NAME, "body").text

    def screenshot(self, path: Path, height: int | None = None, width: int | None = None) -> None:
        """Save the window; ``height`` and ``width`` make it that large first (a whole form on one picture)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        size = self.driver.get_window_size()
        if height or width:
            self.driver.set_window_size(width or size["width"], height or size["height"])
        time.sleep(1)  # let the last render settle
        self.driver.save_screenshot(str(path))
        if height or width:
            self.driver.set_window_size(size["width"], size["height"])

    def scroll_to(self, element) -> None:
        self.driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)

    # --- pages -----------------------------------------------------------------------------------
    def login(self, username: str, password: str) -> None:
        self.open("/auth/login")
        self.element("input[name=username]").send_keys(username)
        self.element("input[name=password]").send_keys(password)
        self.element("button[type=submit]").click()
        self.wait(lambda: "/login" not in self.driver.current_url, "the login page to go away")

    def dag_ids_listed(self) -> list[str]:
        self.open("/dags")
        self.element("[data-testid=dag-id]")
        return [e.text.strip() for e in self.elements("[data-testid=dag-id]")]

    def open_trigger_form(self, dag_id: str) -> None:
        self.open(f"/dags/{dag_id}")
        self.element("[data-testid=trigger-dag-button]").click()
        self.element("[data-testid=trigger-dag-submit]")
        self.element("[name^=element_]")

    def form_fields(self) -> dict[str, dict]:
        """{param: {"title", "description"}} of the open trigger form, read from what is displayed."""
        fields = {}
        for group in self.elements("[data-scope=field][data-part=root]"):
            named = group.find_elements(By.CSS_SELECTOR, "[name^=element_]")
            if not named:
                continue
            name = named[0].get_attribute("name").removeprefix("element_")
            label = group.find_element(By.CSS_SELECTOR, "[data-part=label]").get_attribute("textContent")
            helper = group.find_elements(By.CSS_SELECTOR, "[data-part=helper-text]")
            fields[name] = {"title": label.replace("*", "").strip(),
                            "description": helper[0].get_attribute("textContent").strip() if helper else ""}
        return fields

    def type_into(self, param: str, value: str) -> str:
        """Type ``value`` into a number field as a person would, leave it; return what it then holds."""
        field = self.element(f"[name=element_{param}]")
        self.scroll_to(field)
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(Keys.BACKSPACE)
        field.send_keys(value)
        field.send_keys(Keys.TAB)  # the form commits (and checks) a number when the field is left
        time.sleep(0.5)
        return self.element(f"[name=element_{param}]").get_attribute("value")

    def select_options_for(self, param: str, typed: str) -> str:
        """Type into an enum param's select and return the menu it shows (e.g. 'No options')."""
        box = self.element(f"#element_{param} input[role=combobox]")
        self.scroll_to(box)
        box.click()
        box.send_keys(typed)
        time.sleep(0.5)
        menu = self.element(f"#element_{param}").text
        for _ in typed:
            box.send_keys(Keys.BACKSPACE)
        return menu

    def submit_trigger(self) -> None:
        submit = self.element("[data-testid=trigger-dag-submit]")
        self.scroll_to(submit)
        submit.click()
        self.wait(lambda: not self.elements("[data-testid=trigger-dag-submit]"), "the trigger form to close")
