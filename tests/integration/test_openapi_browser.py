"""
Issue 23 item 5: C{/docs} in a real browser.  A gateway (C{openapi.expose:
public}) and the Billing example run as twistd processes; headless
Chromium (Debian's C{chromium} and C{chromium-driver}, driven by selenium)
opens C{/docs}, finds the Billing operations, runs "Try it out" on
C{GET /ping} and sees 200.  The test saves a screenshot: to the test's
temporary directory, or to C{$STELLA_OPENAPI_SCREENSHOT} when set (how
C{docs/router/images/openapi-docs.png} is made).
"""

from __future__ import annotations

import os
from typing import Dict, List

import treq
from twisted.internet import threads

from .test_processes import ProcessTestCase

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
#: Seconds the browser may take for each step (the page loads ~1.7 MB of script).
STEP = 20


def drive_docs_page(docs_url: str, screenshot: str) -> Dict[str, object]:
    """
    Open the docs page, expand C{GET /ping}, "Try it out", "Execute", and
    read what the page shows (runs in a thread: selenium blocks).

    @return: the tags listed, the Billing paths shown, the status of the
        executed request, and the server URL the page called.
    """
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1280,2000",
                     "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        wait = WebDriverWait(driver, STEP)
        driver.get(docs_url)
        wait.until(EC.presence_of_element_located((By.CSS_SELECTOR, ".opblock-tag")))
        tags: List[str] = [e.get_attribute("data-tag") or e.text
                           for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-tag")]
        paths = sorted({e.get_attribute("data-path") or "" for e in driver.find_elements(
            By.CSS_SELECTOR, ".opblock .opblock-summary-path")})
        ping = driver.find_element(
            By.XPATH, "//div[contains(@class, 'opblock-get')]"
                      "[.//*[contains(@class, 'opblock-summary-path') and @data-path='/ping']]")
        ping.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
        wait.until(lambda d: ping.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
        ping.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
        wait.until(lambda d: ping.find_elements(By.CSS_SELECTOR, "button.execute"))
        ping.find_element(By.CSS_SELECTOR, "button.execute").click()
        wait.until(lambda d: ping.find_elements(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"))
        status = ping.find_element(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status").text.strip()
        url = ping.find_element(By.CSS_SELECTOR, ".request-url pre").text.strip()
        body = ping.find_element(
            By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_description pre").text
        driver.save_screenshot(screenshot)
        return {"tags": tags, "paths": paths, "status": status, "url": url, "body": body}
    finally:
        driver.quit()


class DocsInBrowserTests(ProcessTestCase):
    timeout = 120

    async def test_try_it_out_on_ping(self) -> None:
        """
        Swagger UI served by the gateway lists the Billing operations, and
        "Try it out" on C{GET /ping} goes through the gateway to Billing and
        shows 200 with C{pong}.
        """
        if not (os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)):
            self.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed (scripts/test.sh installs "
                      "Debian's chromium and chromium-driver)")
        await self.deployment.start_gateway(extra="openapi: {expose: public}")
        await self.deployment.start_microservice("examples.billing.service:service", "billing-1")
        base = self.deployment.base_url
        response = await treq.get(base + "/openapi.json", pool=self.pool)
        self.assertEqual(response.code, 200)
        self.assertIn(b'"/ping"', await response.content())
        screenshot = os.environ.get("STELLA_OPENAPI_SCREENSHOT") or os.path.abspath(
            self.mktemp() + ".png")
        seen = await threads.deferToThread(drive_docs_page, base + "/docs", screenshot)
        self.assertEqual(seen["tags"], ["billing"])
        self.assertEqual(seen["paths"], ["/invoices", "/invoices/{id}",
                                         "/invoices/{id}/attachments", "/invoices/{id}/export",
                                         "/ping"])
        self.assertEqual(seen["status"], "200")
        self.assertEqual(seen["url"], base + "/ping")
        self.assertEqual(seen["body"], "pong")
        self.assertTrue(os.path.getsize(screenshot) > 10_000)
